"""The deployable bundle (.ekb): a tar.gz of manifest.json, the variant files and golden data.

Reading is for the device (no torch): safe extraction (no absolute paths, no '..', no links or
devices), schema check, and an optional ed25519 signature over manifest.json, whose sha256
entries in turn pin every file.
"""

from __future__ import annotations

import io
import os
import shutil
import tarfile
import tempfile
import zlib
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import Optional

from ._schema import replace
from ._io import atomic_write_bytes, sha256_file, sweep_stale
from .errors import BundleError, EdgekitError, first_line
from .manifest import Manifest, schema_needed

SIGNATURE = "manifest.sig"


# --- writing (workstation side) -------------------------------------------------------------

def make_bundle(source: str | Path, out: str | Path, sign_key: Optional[str | Path] = None,
                version: Optional[str] = None, name: Optional[str] = None) -> Manifest:
    """Pack an ``edgekit optimize`` output directory into ``out`` (written atomically); ``name``
    and ``version`` replace the model's in the manifest (the fleet logs and rolls out by them)."""
    from .names import BadName, check_model_names

    try:
        check_model_names(name, version)
    except BadName as exc:
        raise BundleError(str(exc)) from None
    source = Path(source)
    manifest_path = source / "manifest.json"
    if not manifest_path.is_file():
        if (source / "report.json").is_file():
            raise BundleError(f"{source} has no manifest.json: no candidate passed there",
                              "see its report.md; loosen --tolerance or give better --data, and optimize again")
        raise BundleError(f"{source} has no manifest.json", "pass the output directory of 'edgekit optimize'")
    manifest = Manifest.loads(manifest_path.read_bytes(), str(manifest_path))
    for variant in manifest.variants:
        path = _inside(source, variant.file)
        if not path.is_file() or sha256_file(path) != variant.sha256:
            raise BundleError(f"{variant.file} changed since optimize wrote it (sha256 mismatch)",
                              "re-run edgekit optimize")
    golden = manifest.golden
    if golden is not None:  # schema 2: the self-test data is pinned like every variant
        golden = replace(golden, sha256=sha256_file(_inside(source, golden.file)))
    manifest = manifest.replace(
        schema_version=schema_needed(manifest), created=datetime.now(timezone.utc).isoformat(timespec="seconds"),
        golden=golden, model=replace(manifest.model, name=name or manifest.model.name,
                                                 version=version or manifest.model.version))
    body = manifest.dumps()
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w:gz") as tar:
        _add_bytes(tar, "manifest.json", body)  # first, so that a reader can refuse early
        if sign_key:
            _add_bytes(tar, SIGNATURE, sign(body, sign_key))
        for name in manifest.files():
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
    """Write a new key pair; never replaces an existing key (that would orphan every device)."""
    for path in (private_path, public_path):
        if Path(path).exists():
            raise BundleError(f"{path} already exists; edgekit will not overwrite a key",
                              "pick another path, or move the old key away yourself")
    serialization, ed25519 = _crypto()
    key = ed25519.Ed25519PrivateKey.generate()
    atomic_write_bytes(private_path, key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                                      serialization.NoEncryption()))
    os.chmod(private_path, 0o600)
    atomic_write_bytes(public_path, key.public_key().public_bytes(serialization.Encoding.PEM,
                                                                  serialization.PublicFormat.SubjectPublicKeyInfo))


def _key_bytes(path: str | Path, what: str) -> bytes:
    path = Path(path)
    if not path.is_file():
        raise BundleError(f"{what} {path} does not exist or is not a file", "check the path")
    return path.read_bytes()


def sign(data: bytes, private_key: str | Path) -> bytes:
    serialization, ed25519 = _crypto()
    try:
        key = serialization.load_pem_private_key(_key_bytes(private_key, "private key"), password=None)
    except (ValueError, TypeError) as exc:
        raise BundleError(f"{private_key} is not a PEM private key ({exc})",
                          "make one with: edgekit package --new-key") from None
    if not isinstance(key, ed25519.Ed25519PrivateKey):
        raise EdgekitError(f"{private_key} is not an ed25519 private key", "make one with: edgekit package --new-key")
    return key.sign(data)


def verify(data: bytes, signature: bytes, public_key: str | Path) -> None:
    serialization, ed25519 = _crypto()
    from cryptography.exceptions import InvalidSignature

    try:
        key = serialization.load_pem_public_key(_key_bytes(public_key, "public key"))
    except (ValueError, TypeError) as exc:
        raise BundleError(f"{public_key} is not a PEM public key ({first_line(exc)})",
                          "pass the .pub file written by: edgekit package --new-key") from None
    if not isinstance(key, ed25519.Ed25519PublicKey):
        raise BundleError(f"{public_key} is not an ed25519 public key", "pass the .pub file from edgekit package --new-key")
    try:
        key.verify(signature, data)
    except InvalidSignature:
        raise BundleError("the bundle's signature does not verify with the configured public key",
                          "the bundle was altered or signed with another key; do not deploy it") from None


# --- reading (device side) ----------------------------------------------------------------

@dataclass(frozen=True)
class Limits:
    """Caps on what opening a bundle may write to disk: a small .ekb must not unpack into a
    full TMPDIR. Both can be raised per call or with EDGEKIT_BUNDLE_MAX_MB / _MAX_FILES."""

    max_bytes: int = int(os.environ.get("EDGEKIT_BUNDLE_MAX_MB", "2048")) * 1024 * 1024
    max_files: int = int(os.environ.get("EDGEKIT_BUNDLE_MAX_FILES", "64"))


def _inside(root: Path, name: str) -> Path:
    """``root/name``, refusing anything that resolves outside ``root`` (links included)."""
    path = root / name
    real_root = root.resolve()
    if real_root not in path.resolve().parents:
        raise BundleError(f"{name!r} points outside the bundle", "refusing path traversal")
    return path


def _check_member(m: tarfile.TarInfo, origin: str) -> None:
    name = m.name
    if not (m.isfile() or m.isdir()):
        raise BundleError(f"{origin}: entry {name!r} is a link or special file", "bundles hold plain files only")
    if name.startswith("/") or ".." in Path(name).parts or os.path.isabs(name):
        raise BundleError(f"{origin}: entry {name!r} points outside the bundle", "refusing path traversal")


MAX_UNLISTED_BYTES = 16 * 1024 * 1024  # an unsigned bundle may carry small extras, not a payload


def _read_tar(path: Path, signed: bool, limits: Limits) -> tuple[Path, Manifest, bytes, Optional[bytes], tempfile.TemporaryDirectory]:
    """Unpack only what the manifest lists, within ``limits``; a signed bundle holds nothing else.

    One pass over the gzip stream, in order (the manifest comes first, as ``make_bundle`` writes
    it), stopping once every listed file is out: listing the members first meant inflating all of
    them, and an unlisted 1 GiB member cost 45 s of CPU to open a 2 MB download. Each member's
    declared size is checked against the limits before it is written."""
    origin = str(path)
    sweep_stale("edgekit-bundle-")  # unpacked copies left by processes that were killed
    holder = tempfile.TemporaryDirectory(prefix=f"edgekit-bundle-{os.getpid()}-")
    root = Path(holder.name)
    try:
        with tarfile.open(path, "r|gz") as tar:
            body, signature, manifest, wanted = None, None, None, set()
            seen, total, count = set(), 0, 0
            for m in tar:
                count += 1
                if count > limits.max_files:
                    raise BundleError(f"{origin} holds more than {limits.max_files} entries, the limit",
                                      "raise EDGEKIT_BUNDLE_MAX_FILES if this bundle is trusted")
                _check_member(m, origin)
                if not m.isfile():
                    continue
                name = os.path.normpath(m.name)
                if name in seen:
                    raise BundleError(f"{origin}: entry {name!r} appears twice", "rebuild the bundle with edgekit package")
                seen.add(name)
                if manifest is None:
                    if name != "manifest.json":
                        raise BundleError(f"{origin}: the first entry is {name!r}, not manifest.json",
                                          "build it with edgekit package (it writes the manifest first)")
                    if m.size > 16 * 1024 * 1024:
                        raise BundleError(f"{origin}: manifest.json is {m.size} bytes", "rebuild the bundle with edgekit package")
                    body = tar.extractfile(m).read()
                    manifest = Manifest.loads(body, f"{origin}: manifest.json")
                    wanted = {os.path.normpath(f) for f in manifest.files()}
                    total = len(body)
                    (root / "manifest.json").write_bytes(body)
                    continue
                if name == SIGNATURE:
                    signature = tar.extractfile(m).read(4096)
                    continue
                if name not in wanted:
                    if signed:
                        raise BundleError(f"{origin} holds files its signed manifest does not list: {name}",
                                          "a signed bundle carries nothing else; rebuild it with edgekit package")
                    if m.size > MAX_UNLISTED_BYTES:
                        raise BundleError(f"{origin} holds {name}, {m.size / 2**20:.0f} MiB that its manifest does not "
                                          "list", "rebuild the bundle with edgekit package")
                    continue
                total += m.size
                if total > limits.max_bytes:
                    raise BundleError(f"{origin} would unpack to more than the limit of "
                                      f"{limits.max_bytes / 2**20:.0f} MiB (at {name}, {total / 2**20:.0f} MiB so far)",
                                      "raise EDGEKIT_BUNDLE_MAX_MB if this bundle is trusted")
                if m.size > shutil.disk_usage(root).free:
                    raise BundleError(f"{origin} needs {m.size / 2**20:.0f} MiB more to unpack {name}; {root.parent} "
                                      "has less free", "free space or set TMPDIR elsewhere")
                target = root / name
                target.parent.mkdir(parents=True, exist_ok=True)
                with tar.extractfile(m) as src, open(target, "wb") as dst:
                    shutil.copyfileobj(src, dst)  # exactly the declared size: tarfile stops there
                if wanted <= seen:
                    # The rest of the stream is never inflated; a signed bundle must have no rest,
                    # which the next header says without reading its data.
                    extra = tar.next() if signed else None
                    if extra is not None:
                        raise BundleError(f"{origin} holds files its signed manifest does not list: {extra.name}",
                                          "a signed bundle carries nothing else; rebuild it with edgekit package")
                    break
        if manifest is None:
            raise BundleError(f"{path} has no manifest.json", "build it with edgekit package")
        missing = sorted(wanted - seen)
        if missing and signed:
            raise BundleError(f"{origin} lacks {', '.join(missing)}, which its signed manifest lists",
                              "the bundle is incomplete; copy it again")
    except BaseException:
        holder.cleanup()
        raise
    return root, manifest, body, signature, holder


def open_bundle(path: str | Path, public_key: Optional[str | Path] = None,
                limits: Optional[Limits] = None) -> tuple[Path, Manifest, Optional[tempfile.TemporaryDirectory]]:
    """(directory, manifest, tempdir to keep alive) for a .ekb file or an unpacked directory.

    Every failure is a BundleError: a truncated download, a hostile archive and a manifest that
    does not validate read the same to an app that catches ``EdgekitError``. With a public key,
    the signature, then every file's sha256, must check out, or the whole bundle is refused.
    """
    path = Path(path)
    if not path.exists():
        raise BundleError(f"bundle {path} does not exist", "check the path")
    holder, signature = None, None
    if path.is_dir():
        root = path
        manifest_path = root / "manifest.json"
        if not manifest_path.is_file():
            raise BundleError(f"{path} has no manifest.json", "build it with edgekit package")
        body = manifest_path.read_bytes()
        manifest = Manifest.loads(body, str(manifest_path))
        if (root / SIGNATURE).is_file():
            signature = (root / SIGNATURE).read_bytes()
    else:
        try:
            root, manifest, body, signature, holder = _read_tar(path, public_key is not None, limits or Limits())
        except (tarfile.TarError, EOFError, zlib.error, OSError) as exc:
            raise BundleError(f"{path} is not a readable bundle ({type(exc).__name__}: {exc})",
                              "the file is truncated or not a .ekb; copy it again or rebuild it with edgekit package") from None
    try:
        for name in manifest.files():
            _inside(root, name)
        if public_key:
            if signature is None:
                raise BundleError(f"{path} is not signed, and a public key is configured",
                                  "sign it: edgekit package --sign-key")
            verify(body, signature, public_key)
            for variant in manifest.variants:
                _expect_hash(root, variant.file, variant.sha256, path)
            if manifest.golden is not None:
                if manifest.golden.sha256 is None:
                    raise BundleError(f"{path}: the signed manifest does not pin {manifest.golden.file}",
                                      "rebuild the bundle with this edgekit's package command")
                _expect_hash(root, manifest.golden.file, manifest.golden.sha256, path)
        elif manifest.golden is not None and manifest.golden.sha256 is not None:
            _expect_hash(root, manifest.golden.file, manifest.golden.sha256, path)
    except BaseException:
        if holder is not None:
            holder.cleanup()
        raise
    return root, manifest, holder


def read_manifest(path: str | Path, public_key: Optional[str | Path] = None) -> Manifest:
    """A bundle's manifest, checked as ``open_bundle`` checks it (signature and hashes with a
    key), without keeping the unpacked files or loading a model."""
    _, manifest, holder = open_bundle(path, public_key)
    if holder is not None:
        holder.cleanup()
    return manifest


def _expect_hash(root: Path, name: str, sha: str, origin) -> None:
    path = _inside(root, name)
    if not path.is_file():
        raise BundleError(f"{origin}: {name} is missing", "the bundle is incomplete; copy it again")
    if sha256_file(path) != sha:
        raise BundleError(f"{origin}: {name} does not match its sha256 in the manifest",
                          "the bundle was altered after packaging; do not deploy it")
