"""The fleet-update wire formats, defined once: what the collector assigns a device (GET
/v1/assignment) and what a device reports about a version (POST /v1/device-state).

The collector writes them and the device's Updater reads them (and the other way round). Every
field is checked before anything acts on it: an assignment names a file on the device
(``bundles/<sha256>.ekb``) and a download size, so a collector that is wrong, or not ours, must
not be able to steer a write outside the device's folder or kill the updater with a bad size.
Standard library only: this runs on the device.
"""

from __future__ import annotations

import json
import re
from typing import Optional

from .._schema import Document, SchemaError, from_dict, to_dict
from ..names import BadName, check_name

SHA256 = re.compile(r"^[0-9a-f]{64}$")
MAX_BUNDLE_BYTES = 1 << 40
DEVICE_STATES = ("running", "failed", "shadow")
MAX_STATE_BODY = 16 * 1024


class WireError(ValueError):
    """A malformed assignment or device report, with the field and what was expected."""


def check_version(version: str, what: str = "version") -> str:
    """A version is a name (edgekit.names): never a path, never blank, never a line break."""
    try:
        return check_name(version, what, "3, 1.2.0, 2026-12-03")
    except BadName as exc:
        raise WireError(str(exc)) from None


class Release(Document):
    """One published bundle of a model."""

    model: str
    version: str
    sha256: str
    size: int
    created: float = 0.0

    def validate(self) -> None:
        check_version(self.version)
        if not SHA256.match(self.sha256):
            raise WireError("sha256 must be 64 lowercase hex digits")
        if not 0 < self.size <= MAX_BUNDLE_BYTES:
            raise WireError(f"size must be a positive byte count, got {self.size}")


class Assignment(Document):
    """What a device should run of ``model``: a release (``version``, ``sha256``, ``size``; no
    version: nothing assigned, keep what runs), and ``shadow``, a release to run beside it whose
    outputs are only logged. Flat, as devices in the field read it."""

    model: str
    version: Optional[str] = None
    sha256: Optional[str] = None
    size: Optional[int] = None
    created: float = 0.0
    rollout: Optional[str] = None  # the rollout's state (canary, promoted, paused, rolled_back)
    canary: bool = False
    shadow: Optional[Release] = None

    def validate(self) -> None:
        if self.version is not None:
            Release(self.model, self.version, self.sha256 or "", self.size or 0, self.created).validate()

    @property
    def release(self) -> Optional[Release]:
        return None if self.version is None else Release(self.model, self.version, self.sha256, self.size,
                                                         self.created)

    @classmethod
    def parse(cls, body: bytes | str) -> "Assignment":
        try:
            data = json.loads(body)
        except (ValueError, RecursionError):
            raise WireError(f"the assignment is not JSON: {str(body[:80])!r}") from None
        try:
            return from_dict(cls, data, "assignment")
        except SchemaError as exc:
            raise WireError(str(exc)) from None

    def to_dict(self) -> dict:
        return to_dict(self)


class DeviceState(Document):
    """A device about one version of a model: it runs it, runs it in shadow, or it failed there
    (a self-test that did not pass, a signature that did not verify) with the reason."""

    model: str
    version: str
    state: str
    reason: str = ""

    def validate(self) -> None:
        if not 0 < len(self.model) <= 200:
            raise WireError("model must be 1-200 characters")
        check_version(self.version)
        if self.state not in DEVICE_STATES:
            raise WireError(f"state must be one of {', '.join(DEVICE_STATES)}")
        if len(self.reason) > 2000:
            raise WireError("reason must be at most 2000 characters")

    @classmethod
    def parse(cls, body: bytes) -> "DeviceState":
        if len(body) > MAX_STATE_BODY:
            raise WireError(f"a device-state report is at most {MAX_STATE_BODY} bytes")
        try:
            data = json.loads(body)
        except (ValueError, RecursionError, UnicodeDecodeError):
            raise WireError("the report is not JSON") from None
        try:
            return from_dict(cls, data, "device-state")
        except SchemaError as exc:
            raise WireError(str(exc)) from None

    def dumps(self) -> bytes:
        return json.dumps(to_dict(self)).encode()
