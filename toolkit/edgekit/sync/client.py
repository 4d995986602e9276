"""The sync client: ships the device log to the collector, at least once, over bad networks.

Each batch is read from the store in id order (a backlog is streamed, never loaded whole),
gzip-compressed, and sent with an idempotency key derived from its content; its rows are marked
shipped only after the collector's acknowledgement. Failures back off exponentially with jitter.
"""

from __future__ import annotations

import gzip
import hashlib
import json
import logging
import random
import ssl
import threading
import time
import urllib.error
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path
from typing import Optional

from ..errors import EdgekitError
from .store import LogStore

log = logging.getLogger("edgekit.sync")

try:
    import tomllib
except ImportError:  # Python 3.10
    import tomli as tomllib  # type: ignore[no-redef]


@dataclass
class SyncConfig:
    db: str
    url: str
    token_file: str
    batch_size: int = 500
    max_age_s: float = 30.0  # ship a partial batch once its oldest record is this old
    poll_s: float = 1.0
    backoff_base_s: float = 0.5
    backoff_max_s: float = 60.0
    timeout_s: float = 30.0
    ca_file: Optional[str] = None  # extra CA for a private collector; https is always verified
    max_bytes: int = 512 * 1024 * 1024
    when_full: str = "drop_oldest"
    sampling: str = "all"
    extra: dict = field(default_factory=dict)

    @classmethod
    def from_file(cls, path: str | Path) -> "SyncConfig":
        path = Path(path)
        try:
            data = tomllib.loads(path.read_text())
        except FileNotFoundError:
            raise EdgekitError(f"sync config {path} does not exist", "see targets/raspberrypi/sync.toml") from None
        except tomllib.TOMLDecodeError as exc:
            raise EdgekitError(f"{path}: not valid TOML: {exc}") from None
        known = set(cls.__dataclass_fields__) - {"extra"}
        unknown = sorted(set(data) - known)
        if unknown:
            raise EdgekitError(f"{path}: unknown key {unknown[0]!r}", f"expected {', '.join(sorted(known))}")
        missing = [k for k in ("db", "url", "token_file") if k not in data]
        if missing:
            raise EdgekitError(f"{path}: missing {', '.join(missing)}")
        return cls(**data)


class SyncClient:
    def __init__(self, store: LogStore, url: str, token: str, batch_size: int = 500, max_age_s: float = 30.0,
                 poll_s: float = 1.0, backoff_base_s: float = 0.5, backoff_max_s: float = 60.0,
                 timeout_s: float = 30.0, ca_file: Optional[str] = None):
        if url.startswith("http://") and not url.startswith(("http://127.", "http://localhost", "http://[::1]")):
            log.warning("shipping device logs over plain http to %s; use https", url)
        self.store, self.url, self.token = store, url.rstrip("/"), token
        self.batch_size, self.max_age_s, self.poll_s = batch_size, max_age_s, poll_s
        self.backoff_base_s, self.backoff_max_s, self.timeout_s = backoff_base_s, backoff_max_s, timeout_s
        self._ssl = ssl.create_default_context(cafile=ca_file)  # verifies certificates and host names
        self._stop = threading.Event()
        self._thread: Optional[threading.Thread] = None
        self.failures = 0
        self.shipped = 0

    # -- one batch ----------------------------------------------------------------------------
    def ship_once(self) -> int:
        """Send one batch; returns the rows (records and feedback) it carried; 0: nothing to send."""
        records, feedback = self.store.next_batch(self.batch_size)
        if not records and not feedback:
            return 0
        body = json.dumps({"records": records, "feedback": feedback}, sort_keys=True, separators=(",", ":")).encode()
        key = hashlib.sha256(body).hexdigest()  # the same content always carries the same key
        request = urllib.request.Request(
            f"{self.url}/v1/logs", data=gzip.compress(body, mtime=0), method="POST",
            headers={"Authorization": f"Bearer {self.token}", "Content-Type": "application/json",
                     "Content-Encoding": "gzip", "Idempotency-Key": key})
        try:
            with urllib.request.urlopen(request, timeout=self.timeout_s, context=self._ssl) as response:
                json.loads(response.read() or b"{}")
        except urllib.error.HTTPError as exc:
            detail = exc.read()[:300].decode(errors="replace")
            if exc.code == 413 and self.batch_size > 1:
                self.batch_size = max(1, self.batch_size // 2)  # the collector's limit: smaller batches
            raise EdgekitError(f"collector answered {exc.code}: {detail}") from None
        except (urllib.error.URLError, OSError) as exc:
            raise EdgekitError(f"cannot reach the collector at {self.url}: {getattr(exc, 'reason', exc)}") from None
        # Acknowledged: only now are the rows marked shipped.
        self.store.mark_shipped([r["id"] for r in records], [f["id"] for f in feedback])
        self.shipped += len(records)
        return len(records) + len(feedback)

    def due(self) -> bool:
        stats = self.store.stats()
        if stats["pending"] >= self.batch_size or stats["pending_feedback"]:
            return True
        oldest = stats["oldest_pending"]
        return oldest is not None and time.time() - oldest >= self.max_age_s

    def drain(self, deadline_s: Optional[float] = None) -> int:
        """Ship until the store is empty (used by tests and 'sync run --once')."""
        total, start = 0, time.monotonic()
        while True:
            try:
                n = self.ship_once()
            except EdgekitError as exc:
                self._back_off(exc)
                if deadline_s is not None and time.monotonic() - start > deadline_s:
                    raise
                continue
            self.failures = 0
            if n == 0:
                return total
            total += n

    # -- the daemon loop ------------------------------------------------------------------------
    def run(self) -> None:
        while not self._stop.is_set():
            if not self.due():
                self._stop.wait(self.poll_s)
                continue
            try:
                while not self._stop.is_set() and self.ship_once():
                    self.failures = 0
                self.failures = 0
            except EdgekitError as exc:
                self._back_off(exc)

    def _back_off(self, exc: Exception) -> None:
        self.failures += 1
        delay = min(self.backoff_max_s, self.backoff_base_s * 2 ** (self.failures - 1))
        delay *= random.uniform(0.5, 1.5)  # jitter: a fleet that lost its collector does not return in step
        log.warning("sync failed (%s); retrying in %.1fs", exc, delay)
        self._stop.wait(delay)

    def start(self) -> "SyncClient":
        self._thread = threading.Thread(target=self.run, name="edgekit-sync", daemon=True)
        self._thread.start()
        return self

    def stop(self, timeout: float = 10.0) -> None:
        self._stop.set()
        if self._thread:
            self._thread.join(timeout)


def client_from_config(config: SyncConfig) -> SyncClient:
    from ..agent.server import read_token

    store = LogStore(config.db, max_bytes=config.max_bytes, when_full=config.when_full, sampling=config.sampling)
    return SyncClient(store, config.url, read_token(config.token_file).decode(), config.batch_size, config.max_age_s,
                      config.poll_s, config.backoff_base_s, config.backoff_max_s, config.timeout_s, config.ca_file)
