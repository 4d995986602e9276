"""The deployable bundle (.ekb): a tar.gz of manifest.json, the variant files and golden data.

Reading is for the device (no torch): safe extraction (no absolute paths, no '..', no links or
devices), schema check, and an optional ed25519 signature over manifest.json, whose sha256
entries in turn pin every file.
"""

from __future__ import annotations

import hashlib
import io
import json
import os
import shutil
import tarfile
import tempfile
from datetime import datetime, timezone
from pathlib import Path
from typing import Optional

from ._io import atomic_write_bytes
from .errors import EdgekitError

SCHEMA_VERSION = 1
SIGNATURE = "manifest.sig"


class BundleError(EdgekitError):
    """A bundle that cannot be trusted or read."""


def sha256_file(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as fh:
        for chunk in iter(lambda: fh.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


# --- writing (workstation side) -------------------------------------------------------------

def make_bundle(source: str | Path, out: str | Path, sign_key: Optional[str | Path] = None,
                version: Optional[str] = None) -> dict:
    """Pack an ``edgekit optimize`` output directory into ``out`` (written atomically)."""
    source = Path(source)
    manifest_path = source / "manifest.json"
    if not manifest_path.exists():
        raise BundleError(f"{source} has no manifest.json", "pass the output directory of 'edgekit optimize'")
    manifest = json.loads(manifest_path.read_text())
    if not manifest.get("variants"):
        raise BundleError(f"{source}/manifest.json lists no variants", "re-run edgekit optimize; no candidate passed")
    manifest["schema_version"] = SCHEMA_VERSION
    manifest["created"] = datetime.now(timezone.utc).isoformat(timespec="seconds")
    if version:
        manifest["model"]["version"] = version
    files = [v["file"] for v in manifest["variants"]]
    if manifest.get("golden"):
        files.append(manifest["golden"]["file"])
    for variant in manifest["variants"]:
        actual = sha256_file(source / variant["file"])
        if actual != variant["sha256"]:
            raise BundleError(f"{variant['file']} changed since optimize wrote it (sha256 mismatch)",
                              "re-run edgekit optimize")
    body = json.dumps(manifest, indent=2).encode()
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w:gz") as tar:
        _add_bytes(tar, "manifest.json", body)
        if sign_key:
            _add_bytes(tar, SIGNATURE, sign(body, sign_key))
        for name in files:
            tar.add(source / name, arcname=name, recursive=False)
    atomic_write_bytes(out, buffer.getvalue())
    return manifest


def _add_bytes(tar: tarfile.TarFile, name: str, data: bytes) -> None:
    info = tarfile.TarInfo(name)
    info.size = len(data)
    info.mtime = int(datetime.now(timezone.utc).timestamp())
    tar.addfile(info, io.BytesIO(data))


def _crypto():
    try:
        from cryptography.hazmat.primitives import serialization
        from cryptography.hazmat.primitives.asymmetric import ed25519
    except ImportError:
        raise EdgekitError("bundle signatures need the 'cryptography' package",
                           "install it with: pip install 'edgekit[sign]'") from None
    return serialization, ed25519


def generate_keys(private_path: str | Path, public_path: str | Path) -> None:
    serialization, ed25519 = _crypto()
    key = ed25519.Ed25519PrivateKey.generate()
    atomic_write_bytes(private_path, key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                                      serialization.NoEncryption()))
    os.chmod(private_path, 0o600)
    atomic_write_bytes(public_path, key.public_key().public_bytes(serialization.Encoding.PEM,
                                                                  serialization.PublicFormat.SubjectPublicKeyInfo))


def sign(data: bytes, private_key: str | Path) -> bytes:
    serialization, ed25519 = _crypto()
    key = serialization.load_pem_private_key(Path(private_key).read_bytes(), password=None)
    if not isinstance(key, ed25519.Ed25519PrivateKey):
        raise EdgekitError(f"{private_key} is not an ed25519 private key", "make one with: edgekit package --new-key")
    return key.sign(data)


def verify(data: bytes, signature: bytes, public_key: str | Path) -> None:
    serialization, ed25519 = _crypto()
    from cryptography.exceptions import InvalidSignature

    key = serialization.load_pem_public_key(Path(public_key).read_bytes())
    try:
        key.verify(signature, data)
    except InvalidSignature:
        raise BundleError("the bundle's signature does not verify with the configured public key",
                          "the bundle was altered or signed with another key; do not deploy it") from None


# --- reading (device side) ----------------------------------------------------------------

def _safe_members(tar: tarfile.TarFile, origin: str) -> list[tarfile.TarInfo]:
    members = tar.getmembers()
    for m in members:
        name = m.name
        if not (m.isfile() or m.isdir()):
            raise BundleError(f"{origin}: entry {name!r} is a link or special file", "bundles hold plain files only")
        if name.startswith("/") or ".." in Path(name).parts or os.path.isabs(name):
            raise BundleError(f"{origin}: entry {name!r} points outside the bundle", "refusing path traversal")
    return members


def open_bundle(path: str | Path, public_key: Optional[str | Path] = None) -> tuple[Path, dict, Optional[tempfile.TemporaryDirectory]]:
    """(directory, manifest, tempdir to keep alive) for a .ekb file or an unpacked directory."""
    path = Path(path)
    if not path.exists():
        raise BundleError(f"bundle {path} does not exist", "check the path")
    holder = None
    if path.is_dir():
        root = path
    else:
        try:
            tar = tarfile.open(path, "r:gz")
        except (tarfile.TarError, OSError) as exc:
            raise BundleError(f"{path} is not a bundle (not a tar.gz: {exc})", "build it with edgekit package") from None
        with tar:
            members = _safe_members(tar, str(path))
            holder = tempfile.TemporaryDirectory(prefix="edgekit-bundle-")
            root = Path(holder.name)
            for m in members:
                target = root / m.name
                if m.isdir():
                    target.mkdir(parents=True, exist_ok=True)
                    continue
                target.parent.mkdir(parents=True, exist_ok=True)
                with tar.extractfile(m) as src, open(target, "wb") as dst:
                    shutil.copyfileobj(src, dst)
    manifest_path = root / "manifest.json"
    if not manifest_path.exists():
        raise BundleError(f"{path} has no manifest.json", "build it with edgekit package")
    body = manifest_path.read_bytes()
    try:
        manifest = json.loads(body)
    except ValueError as exc:
        raise BundleError(f"{path}: manifest.json is not valid JSON ({exc})") from None
    version = manifest.get("schema_version")
    if not isinstance(version, int) or version > SCHEMA_VERSION:
        raise BundleError(f"{path} uses bundle schema {version}, newer than this runtime reads ({SCHEMA_VERSION})",
                          "upgrade edgekit on the device")
    if public_key:
        sig = root / SIGNATURE
        if not sig.exists():
            raise BundleError(f"{path} is not signed, and a public key is configured", "sign it: edgekit package --sign-key")
        verify(body, sig.read_bytes(), public_key)
    return root, manifest, holder
