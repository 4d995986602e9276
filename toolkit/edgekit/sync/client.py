"""The sync client: ships the device log to the collector, at least once, over bad networks.

Each batch is read from the store in id order (a backlog is streamed, never loaded whole),
gzip-compressed, and sent with an idempotency key derived from its content; its rows are marked
shipped only after the collector's acknowledgement. Network failures back off exponentially with
jitter. A refused token is reported at once (retrying cannot fix it). A batch the collector
refuses as too large or malformed is halved until the one row at fault is found, and that row
goes to the store's dead-letter table so that the rows behind it still ship.
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
import urllib.parse
import urllib.request
from pathlib import Path
from typing import Optional

from .._io import read_toml
from .._schema import Document, SchemaError, from_dict
from ..errors import EdgekitError
from .record import Batch
from .store import LogStore

log = logging.getLogger("edgekit.sync")



HEALTH_EVERY_S = 30.0  # how often the store's counters (dropped, pending, ...) are re-read for the collector
GROW_AFTER = 16  # successful smaller batches before the batch size doubles again


class SyncError(EdgekitError):
    """A shipment failed; ``retry`` says whether trying again later can help."""

    def __init__(self, message: str, hint: Optional[str] = None, retry: bool = True, status: int = 0,
                 retry_after: Optional[float] = None):
        super().__init__(message, hint)
        self.retry, self.status, self.retry_after = retry, status, retry_after


class SyncConfig(Document):
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

    def validate(self) -> None:
        check_url(self.url)
        if self.batch_size < 1:
            raise ValueError(f"batch_size must be at least 1, got {self.batch_size}")
        for name in ("poll_s", "backoff_base_s", "backoff_max_s", "timeout_s"):
            if getattr(self, name) <= 0:
                raise ValueError(f"{name} must be positive, got {getattr(self, name)}")
        if self.max_age_s < 0:
            raise ValueError(f"max_age_s must be >= 0, got {self.max_age_s}")
        if self.when_full not in ("drop_oldest", "refuse"):
            raise ValueError(f"when_full must be 'drop_oldest' or 'refuse', got {self.when_full!r}")
        if self.max_bytes < 4096:
            raise ValueError(f"max_bytes must be at least 4096, got {self.max_bytes}")

    @classmethod
    def from_file(cls, path: str | Path) -> "SyncConfig":
        path = Path(path)
        data = read_toml(path, "sync config", "see targets/raspberrypi/sync.toml")
        try:
            return from_dict(cls, data)
        except SchemaError as exc:
            raise EdgekitError(f"{path}: {exc}", "see targets/raspberrypi/sync.toml") from None


def check_url(url: str) -> None:
    parsed = urllib.parse.urlsplit(url)
    if parsed.scheme not in ("http", "https") or not parsed.hostname:
        raise ValueError(f"url {url!r} must be http:// or https:// with a host")


class SyncClient:
    def __init__(self, store: LogStore, url: str, token: str, batch_size: int = 500, max_age_s: float = 30.0,
                 poll_s: float = 1.0, backoff_base_s: float = 0.5, backoff_max_s: float = 60.0,
                 timeout_s: float = 30.0, ca_file: Optional[str] = None):
        try:
            check_url(url)
        except ValueError as exc:
            raise EdgekitError(str(exc), "e.g. https://collector.example.org") from None
        if url.startswith("http://") and not url.startswith(("http://127.", "http://localhost", "http://[::1]")):
            log.warning("shipping device logs over plain http to %s; use https", url)
        self.store, self.url, self.token = store, url.rstrip("/"), token
        self.configured_batch_size = self.batch_size = batch_size
        self.max_age_s, self.poll_s = max_age_s, poll_s
        self.backoff_base_s, self.backoff_max_s, self.timeout_s = backoff_base_s, backoff_max_s, timeout_s
        try:
            self._ssl = ssl.create_default_context(cafile=ca_file)  # verifies certificates and host names
        except (OSError, ssl.SSLError) as exc:
            raise EdgekitError(f"ca_file {ca_file} cannot be read as PEM certificates: {exc}") from None
        self._stop = threading.Event()
        self._thread: Optional[threading.Thread] = None
        self.failures = 0
        self.shipped = 0
        self.dead_lettered = 0
        self._good_batches = 0
        self._health: tuple[float, Optional[dict]] = (-1e9, None)

    # -- one batch ----------------------------------------------------------------------------
    def _refresh_health(self) -> None:
        """Re-read the store's counters, at most every HEALTH_EVERY_S (counting a large backlog
        costs) and only after a batch was acknowledged: a retried batch must be byte-identical,
        or its idempotency key would change."""
        if time.monotonic() - self._health[0] >= HEALTH_EVERY_S:
            try:
                health = self.store.health()
            except Exception:  # noqa: BLE001 - a failing disk must not stop shipping what is readable
                health = self._health[1]
            self._health = (time.monotonic(), health)

    def _post(self, records: list[dict], feedback: list[dict]) -> None:
        body = Batch.dumps(self.store.store_id, records, feedback, self._health[1])
        key = hashlib.sha256(body).hexdigest()  # the same content always carries the same key
        request = urllib.request.Request(
            f"{self.url}/v1/logs", data=gzip.compress(body, mtime=0), method="POST",
            headers={"Authorization": f"Bearer {self.token}", "Content-Type": "application/json",
                     "Content-Encoding": "gzip", "Idempotency-Key": key})
        try:
            with urllib.request.urlopen(request, timeout=self.timeout_s, context=self._ssl) as response:
                json.loads(response.read() or b"{}")
        except urllib.error.HTTPError as exc:
            try:
                detail = json.loads(exc.read()[:2000]).get("error", "")
            except (ValueError, AttributeError, OSError):
                detail = ""
            status = exc.code
            if status in (401, 403):
                raise SyncError(f"the collector refused this device's token ({status}: {detail})",
                                "the device was revoked or the token file is wrong; "
                                "get a new one with: edgekit collector add-device NAME", retry=False, status=status) from None
            retry_after = None
            if status in (429, 503):
                try:
                    retry_after = float(exc.headers.get("Retry-After", ""))
                except ValueError:
                    pass
            raise SyncError(f"collector answered {status}: {detail}", status=status, retry_after=retry_after,
                            retry=status >= 500 or status in (408, 429)) from None
        except (urllib.error.URLError, OSError) as exc:
            raise SyncError(f"cannot reach the collector at {self.url}: {getattr(exc, 'reason', exc)}") from None

    def ship_once(self) -> int:
        """Send one batch; returns the rows (records and feedback) it settled; 0: nothing to send."""
        records, feedback = self.store.next_batch(self.batch_size)
        if not records and not feedback:
            return 0
        if self.batch_size == 1 and records:
            feedback = []  # narrowing down to one row: the record first, its feedback next time
        if self._health[1] is None and self._health[0] < 0:
            self._refresh_health()  # the first batch reports the store as it was found
        try:
            self._post(records, feedback)
        except SyncError as exc:
            if exc.retry or exc.status in (401, 403):
                raise
            return self._narrow(records, feedback, exc)
        # Acknowledged: only now are the rows marked shipped.
        self.store.mark_shipped([r["id"] for r in records], [f["id"] for f in feedback])
        self.shipped += len(records)
        self._refresh_health()
        if self.batch_size < self.configured_batch_size:
            # Grow back only after a run of successes: growing at once would hit the same 413
            # on every other batch.
            self._good_batches += 1
            if self._good_batches >= GROW_AFTER:
                self.batch_size, self._good_batches = min(self.configured_batch_size, self.batch_size * 2), 0
        return len(records) + len(feedback)

    def _narrow(self, records: list[dict], feedback: list[dict], exc: SyncError) -> int:
        """The collector refused the batch itself (413: too large; 400/422: malformed). Halve
        until the offending row is alone, then set that row aside in the dead-letter table."""
        rows = len(records) + len(feedback)
        if rows > 1:
            self.batch_size = max(1, min(self.batch_size, max(len(records), len(feedback))) // 2)
            self._good_batches = 0
            log.warning("collector refused a batch of %d rows (%s); retrying with %d", rows, exc, self.batch_size)
            return self.ship_once()
        kind, row = ("record", records[0]) if records else ("feedback", feedback[0])
        self.store.dead_letter(kind, row, str(exc))
        self.dead_lettered += 1
        return 1

    def due(self) -> bool:
        stats = self.store.stats()
        if stats["pending"] >= self.batch_size or stats["pending_feedback"]:
            return True
        oldest = stats["oldest_pending"]
        return oldest is not None and time.time() - oldest >= self.max_age_s

    def drain(self, deadline_s: Optional[float] = None) -> int:
        """Ship until the store is empty ('sync run --once', tests). Gives up with the last
        error after ``deadline_s`` of failing, and at once when the token is refused."""
        total, start = 0, time.monotonic()
        while True:
            try:
                n = self.ship_once()
            except SyncError as exc:
                if not exc.retry and exc.status in (401, 403):
                    raise
                if deadline_s is not None and time.monotonic() - start + self._delay(exc) > deadline_s:
                    raise SyncError(f"gave up after {deadline_s:.0f} s: {exc.message}",
                                    "the backlog stays on the device and ships on the next run") from None
                self._back_off(exc)
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
            except SyncError as exc:
                if exc.status in (401, 403):
                    log.error("%s", exc)  # retried rarely: an operator has to act
                self._back_off(exc)

    def _delay(self, exc: SyncError) -> float:
        if exc.status in (401, 403):
            return self.backoff_max_s
        if exc.retry_after is not None:
            return min(self.backoff_max_s, max(0.0, exc.retry_after))
        delay = min(self.backoff_max_s, self.backoff_base_s * 2 ** self.failures)
        return delay * random.uniform(0.5, 1.5)  # jitter: a fleet that lost its collector does not return in step

    def _back_off(self, exc: SyncError) -> None:
        delay = self._delay(exc)
        self.failures += 1
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
    from ..tokens import read_token

    token = read_token(config.token_file).decode()
    store = LogStore(config.db, max_bytes=config.max_bytes, when_full=config.when_full, sampling=config.sampling)
    return SyncClient(store, config.url, token, config.batch_size, config.max_age_s,
                      config.poll_s, config.backoff_base_s, config.backoff_max_s, config.timeout_s, config.ca_file)
