"""Over-the-air model updates on the device (runtime-only install: no torch).

An :class:`Updater` polls the collector for the version its rollout assigns to this device
(``GET /v1/assignment``, the device's token), downloads a new bundle in the background
(resumable with HTTP range requests, refused when it would not fit the disk), checks its sha256
and its signature against the pinned public key, loads it with the runtime (every variant
opened and the golden self-test run), and only then switches: ``state.json`` is replaced
atomically and the app's :class:`~edgekit.runtime.hot.HotModel` swaps between two requests. The
previous bundle is kept for an instant rollback. A power cut at any point leaves ``state.json``
naming a bundle that was complete and verified. Every change, and every version that failed
here, is reported to the collector (``POST /v1/device-state``).

Folder layout: ``bundles/<sha256>.ekb`` (and ``.part`` while downloading), ``state.json``.
"""

from __future__ import annotations

import json
import logging
import os
import shutil
import ssl
import threading
import time
import urllib.error
import urllib.request
from pathlib import Path
from typing import Callable, Optional

from .._io import sha256_file
from ..errors import EdgekitError
from .fleet import Assignment, DeviceState, Release, WireError

log = logging.getLogger("edgekit.updates")
CHUNK = 1 << 16
MAX_ASSIGNMENT_BYTES = 64 * 1024


class Updater:
    def __init__(self, url: str, token: str, model: str, folder: str | Path, public_key: Optional[str] = None,
                 on_swap: Optional[Callable[[Path], object]] = None,
                 on_shadow: Optional[Callable[[Optional[Path]], object]] = None, max_bundle_bytes: int = 512 << 20,
                 keep_free_bytes: int = 64 << 20, timeout_s: float = 30.0, cafile: Optional[str] = None,
                 max_rate_bps: Optional[float] = None):
        self.url, self.token, self.model = url.rstrip("/"), token, model
        self.folder = Path(folder)
        (self.folder / "bundles").mkdir(parents=True, exist_ok=True)
        self.public_key, self.on_swap, self.on_shadow = public_key, on_swap, on_shadow
        self.max_bundle_bytes, self.keep_free_bytes, self.timeout_s = max_bundle_bytes, keep_free_bytes, timeout_s
        self._ssl = ssl.create_default_context(cafile=cafile) if cafile else None
        self.max_rate_bps = max_rate_bps  # a bandwidth cap, so that an update never starves the app's traffic
        self.fetched = 0  # bytes downloaded by this updater (a resumed download fetches only the rest)
        self._stop = threading.Event()
        self._thread: Optional[threading.Thread] = None

    # -- state ------------------------------------------------------------------------------------
    @property
    def state_file(self) -> Path:
        return self.folder / "state.json"

    def state(self) -> dict:
        try:
            return json.loads(self.state_file.read_text())
        except (OSError, ValueError):
            return {"current": None, "previous": None, "failed": []}

    def _save(self, state: dict) -> None:
        tmp = self.state_file.with_suffix(".tmp")
        with open(tmp, "w") as f:
            json.dump(state, f)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, self.state_file)  # the switch: atomic, and durable once the folder is synced
        fd = os.open(self.folder, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)

    def current_bundle(self) -> Optional[Path]:
        """The bundle to run: the last one that was verified and switched to."""
        current = self.state().get("current")
        if current and (self.folder / "bundles" / f"{current['sha256']}.ekb").is_file():
            return self.folder / "bundles" / f"{current['sha256']}.ekb"
        return None

    # -- HTTP -------------------------------------------------------------------------------------
    def _request(self, path: str, data: Optional[bytes] = None, headers: Optional[dict] = None):
        request = urllib.request.Request(f"{self.url}{path}", data=data, method="POST" if data is not None else "GET",
                                         headers={"Authorization": f"Bearer {self.token}", **(headers or {})})
        return urllib.request.urlopen(request, timeout=self.timeout_s, context=self._ssl)

    def _report(self, version: str, state: str, reason: str = "") -> None:
        body = DeviceState(self.model, version, state, reason[:2000]).dumps()
        try:
            with self._request("/v1/device-state", body, {"Content-Type": "application/json"}) as r:
                r.read()
        except (urllib.error.URLError, OSError) as exc:  # reported again with the next change
            log.warning("could not report %s %s: %s", version, state, exc)

    def assignment(self) -> Assignment:
        """What the collector assigns, every field checked (a sha256 becomes a file name here)."""
        from urllib.parse import quote

        try:
            with self._request(f"/v1/assignment?model={quote(self.model)}") as r:
                body = r.read(MAX_ASSIGNMENT_BYTES + 1)
        except urllib.error.HTTPError as exc:
            raise EdgekitError(f"the collector refused the assignment request: HTTP {exc.code}") from None
        except (urllib.error.URLError, OSError) as exc:
            raise EdgekitError(f"cannot reach the collector at {self.url}: {getattr(exc, 'reason', exc)}") from None
        try:
            if len(body) > MAX_ASSIGNMENT_BYTES:
                raise WireError(f"the assignment is longer than {MAX_ASSIGNMENT_BYTES} bytes")
            found = Assignment.parse(body)
        except WireError as exc:
            raise EdgekitError(f"ignored a malformed assignment from {self.url}: {exc}") from None
        if found.model != self.model:
            raise EdgekitError(f"ignored an assignment for model {found.model!r} (this updater runs {self.model!r})")
        return found

    def _download(self, sha: str, size: int) -> Path:
        """The bundle into bundles/<sha>.part, resuming what an earlier try left; renamed to
        .ekb only once it is whole and its hash matches."""
        if size > self.max_bundle_bytes:
            raise EdgekitError(f"the bundle is {size:,} bytes, over this device's limit of {self.max_bundle_bytes:,}")
        final = self.folder / "bundles" / f"{sha}.ekb"
        if final.is_file() and sha256_file(final) == sha:
            return final
        part = final.with_suffix(".part")
        have = part.stat().st_size if part.exists() else 0
        if have > size:
            part.unlink()
            have = 0
        free = shutil.disk_usage(self.folder).free
        if free - (size - have) < self.keep_free_bytes:
            raise EdgekitError(f"the bundle needs {size - have:,} more bytes and the disk has {free:,} free "
                               f"(keeping {self.keep_free_bytes:,})")
        if have < size:
            headers = {"Range": f"bytes={have}-"} if have else {}
            try:
                with self._request(f"/v1/bundles/{sha}", headers=headers) as r:
                    mode = "ab" if r.status == 206 else "wb"  # 200: the server sent it all
                    expected = size - have if r.status == 206 else size
                    with open(part, mode) as f:
                        started, got = time.monotonic(), 0
                        while block := r.read(CHUNK):
                            if got + len(block) > expected:  # never more than announced: a full disk is worse
                                f.close()
                                part.unlink()
                                raise EdgekitError(f"bundle {sha[:12]} runs past its announced {size:,} bytes: refused")
                            f.write(block)
                            got += len(block)
                            self.fetched += len(block)
                            if self.max_rate_bps:
                                ahead = got / self.max_rate_bps - (time.monotonic() - started)
                                if ahead > 0:
                                    time.sleep(ahead)
                        f.flush()
                        os.fsync(f.fileno())
            except urllib.error.HTTPError as exc:
                raise EdgekitError(f"downloading bundle {sha[:12]} failed: HTTP {exc.code}") from None
            except (urllib.error.URLError, OSError) as exc:
                raise EdgekitError(f"downloading bundle {sha[:12]} broke off ({exc}); it resumes at the next poll") \
                    from None
        got = sha256_file(part)
        if got != sha:
            part.unlink()
            raise EdgekitError(f"bundle {sha[:12]} arrived with sha256 {got[:12]}: refused")
        os.replace(part, final)
        return final

    # -- the update -------------------------------------------------------------------------------
    def poll_once(self) -> dict:
        """One poll: returns what happened ({"event": "none" | "switched" | "refused", ...})."""
        wanted = self.assignment()
        version, sha = wanted.version, wanted.sha256
        state = self.state()
        current = state.get("current") or {}
        self._follow_shadow(wanted.shadow, state)
        if not version or sha == current.get("sha256"):
            return {"event": "none", "version": current.get("version")}
        if sha in state.get("failed", []):
            return {"event": "none", "version": current.get("version"), "note": f"{version} failed here before"}
        try:
            path = self._download(sha, wanted.size)
        except EdgekitError as exc:
            if "refused" in str(exc):  # the collector serves other bytes than it published
                self._report(version, "failed", str(exc))
            raise
        try:
            self._verify(path)
            if self.on_swap is not None:
                self.on_swap(path)  # the app's hot swap: loads and self-tests before switching
        except Exception as exc:  # a bundle that does not verify or load must not be switched to
            reason = str(exc).split("\n")[0][:300]
            state.setdefault("failed", []).append(sha)
            self._save(state)
            path.unlink(missing_ok=True)
            self._report(version, "failed", reason)
            log.error("%s %s refused: %s", self.model, version, reason)
            return {"event": "refused", "version": version, "reason": reason}
        previous = state.get("current")
        state["previous"], state["current"] = previous, {"version": version, "sha256": sha, "time": time.time()}
        self._save(state)
        self._prune(state)
        self._report(version, "running")
        log.info("%s switched to %s", self.model, version)
        return {"event": "switched", "version": version, "previous": (previous or {}).get("version")}

    def _follow_shadow(self, shadow: Optional[Release], state: dict) -> None:
        """Start, change or stop the shadow version the rollout asks for (an app that gave no
        ``on_shadow`` runs none). A shadow that does not verify is reported like a canary."""
        if self.on_shadow is None:
            return
        running = (state.get("shadow") or {}).get("sha256")
        wanted = shadow.sha256 if shadow else None
        if running == wanted:
            return
        if not wanted:
            self.on_shadow(None)
            state["shadow"] = None
            self._save(state)
            return
        if wanted in state.get("failed", []):
            return
        try:
            path = self._download(wanted, shadow.size)
            self._verify(path)
            self.on_shadow(path)
        except Exception as exc:  # noqa: BLE001 - the served model is untouched either way
            state.setdefault("failed", []).append(wanted)
            self._save(state)
            self._report(shadow.version, "failed", f"shadow: {str(exc).splitlines()[0][:300]}")
            return
        state["shadow"] = {"version": shadow.version, "sha256": wanted}
        self._save(state)
        self._report(shadow.version, "shadow")

    def _verify(self, path: Path) -> None:
        """Signature against the pinned key, then a full load with the golden self-test (when no
        app swap does that itself)."""
        from ..bundle import read_manifest

        read_manifest(path, self.public_key)
        if self.on_swap is None:
            from ..runtime import load

            load(path, public_key=self.public_key).close()

    def _prune(self, state: dict) -> None:
        """Keep the current and the previous bundle (and downloads in progress); remove older
        bundles this updater wrote."""
        keep = {f"{s['sha256']}.ekb" for s in (state.get("current"), state.get("previous"), state.get("shadow")) if s}
        for path in (self.folder / "bundles").glob("*.ekb"):
            if path.name not in keep:
                path.unlink(missing_ok=True)

    def run(self, interval_s: float = 60.0) -> None:
        while not self._stop.is_set():
            try:
                self.poll_once()
            except EdgekitError as exc:
                log.warning("update poll: %s", exc)
            except Exception:  # noqa: BLE001 - a device that stops polling never updates again
                log.exception("update poll failed; polling again in %.0f s", interval_s)
            self._stop.wait(interval_s)

    def start(self, interval_s: float = 60.0) -> "Updater":
        self._thread = threading.Thread(target=self.run, args=(interval_s,), name="edgekit-updater", daemon=True)
        self._thread.start()
        return self

    def stop(self, timeout: float = 10.0) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout)
