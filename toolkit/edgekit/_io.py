"""Small file helpers: atomic writes and the user cache directory."""

from __future__ import annotations

import contextlib
import hashlib
import itertools
import json
import os
import secrets
import shutil
import signal
import tempfile
import threading
import time
from pathlib import Path
from typing import Callable

from .errors import EdgekitError


def cache_dir() -> Path:
    """Where edgekit caches things it can rebuild (trained demo models)."""
    root = os.environ.get("EDGEKIT_CACHE") or os.path.join(
        os.environ.get("XDG_CACHE_HOME") or os.path.expanduser("~/.cache"), "edgekit"
    )
    path = Path(root)
    path.mkdir(parents=True, exist_ok=True)
    return path


def installed_versions(names) -> dict[str, str]:
    """The installed version of each distribution in ``names`` that is installed."""
    from importlib import metadata

    versions = {}
    for name in names:
        try:
            versions[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            pass
    return versions


def plain(value):
    """``value`` as the types JSON holds. Numpy scalars become numbers and booleans (through
    ``default=str`` a numpy bool was written as the string "False", which every JSON reader takes
    as true), arrays become lists, paths text, non-finite floats null (JSON has no NaN). Anything
    else is a bug and raises TypeError instead of being written as its repr."""
    if value is None or isinstance(value, (bool, int, str)):
        return value
    if hasattr(value, "__struct_fields__"):  # a typed document or report: its own JSON form
        to_dict = getattr(value, "to_dict", None)
        return plain(to_dict() if to_dict else {f: getattr(value, f) for f in value.__struct_fields__})
    if isinstance(value, float):
        return value if value == value and value not in (float("inf"), float("-inf")) else None
    if isinstance(value, dict):
        return {str(k): plain(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [plain(v) for v in value]
    if isinstance(value, (set, frozenset)):
        return sorted(plain(v) for v in value)
    if hasattr(value, "dtype") and hasattr(value, "tolist"):  # numpy scalars and arrays, without importing numpy
        return plain(value.tolist())
    if isinstance(value, os.PathLike):
        return os.fspath(value)
    if hasattr(value, "isoformat"):
        return value.isoformat()
    raise TypeError(f"{type(value).__name__} is not JSON data")


def to_json(value, **kwargs) -> str:
    """json.dumps of plain(value): one encoder for every report, --json and stored detail."""
    return json.dumps(plain(value), allow_nan=False, **kwargs)


def sha256_file(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as fh:
        for chunk in iter(lambda: fh.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def read_toml(path: str | os.PathLike, what: str, hint: str | None = None, error=EdgekitError) -> dict:
    """A TOML file as a dict; a missing, binary or malformed file is one ``error`` naming it."""
    try:
        import tomllib
    except ImportError:  # Python 3.10
        import tomli as tomllib  # type: ignore[no-redef]
    path = Path(path)
    if not path.exists():
        raise error(f"{what} {path} does not exist", hint)
    if not path.is_file():
        raise error(f"{what} {path} is not a file", hint)
    try:
        return tomllib.loads(path.read_text(encoding="utf-8"))
    except UnicodeDecodeError:
        raise error(f"{path} is not a text file", hint) from None
    except tomllib.TOMLDecodeError as exc:
        raise error(f"{path}: not valid TOML: {exc}", hint) from None


def atomic_write_bytes(path: str | os.PathLike, data: bytes) -> Path:
    """Write a file so that readers see either the old content or the new, never half."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as fh:
            fh.write(data)
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
        raise
    return path


def atomic_write_text(path: str | os.PathLike, text: str) -> Path:
    return atomic_write_bytes(path, text.encode("utf-8"))


MARKER = ".edgekit-output"  # in every directory edgekit writes; only those does it ever replace


def check_replaceable(path: str | os.PathLike, flag: str = "--out") -> Path:
    """The absolute ``path`` if edgekit may (re)write a directory there: nothing there yet, an
    empty directory, or a directory edgekit wrote before (it holds the marker). Anything else
    belongs to the user and is refused, untouched."""
    path = Path(os.path.abspath(path))
    if not path.name:
        raise EdgekitError(f"{flag} {path} is a file system root", "name a new directory")
    if not path.exists() and not path.is_symlink():
        return path
    if path.is_symlink() or not path.is_dir():
        raise EdgekitError(f"{flag} {path} exists and is not a directory edgekit wrote",
                           "pick a new path; edgekit never replaces files it did not create")
    if (path / MARKER).is_file() or not any(path.iterdir()):
        return path
    raise EdgekitError(f"{flag} {path} is a directory that edgekit did not write, and it is not empty",
                       "pick a new or empty directory; edgekit only replaces its own output directories")


def unique_ids() -> Callable[[], str]:
    """A source of 32-hex-digit ids, unique across processes and restarts: a random 80-bit
    prefix per source and a counter. A uuid4 per id costs a getrandom syscall, slow in many VMs,
    for no more uniqueness."""
    prefix, counter = secrets.token_hex(10), itertools.count()
    return lambda: f"{prefix}{next(counter):012x}"


_CWD_LOCK = threading.Lock()


@contextlib.contextmanager
def scratch_cwd():
    """Run a library call that writes into the working directory from a temporary one, deleted
    afterwards: onnxruntime's symbolic shape inference saves ``sym_shape_infer_temp.onnx`` and a
    UUID-named ``.data`` file into the cwd when it cannot finish, which is the user's folder (and
    may hold a file of that name that edgekit did not create). The working directory is
    process-wide, so callers take turns."""
    with _CWD_LOCK, tempfile.TemporaryDirectory(prefix="edgekit-cwd-") as scratch:
        previous = os.getcwd()
        os.chdir(scratch)
        try:
            yield Path(scratch)
        finally:
            os.chdir(previous)


@contextlib.contextmanager
def atomic_directory(path: str | os.PathLike, flag: str = "--out"):
    """Build a directory under a temporary name and move it into place only on success.

    An interrupted run (an exception or Ctrl-C) leaves nothing at ``path``, and ``path`` is
    only replaced when edgekit wrote it (see :func:`check_replaceable`).
    """
    path = check_replaceable(path, flag)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(dir=path.parent, prefix=f".{path.name}.", suffix=".partial"))
    try:
        yield tmp
        (tmp / MARKER).write_text(json.dumps({"tool": "edgekit", "created": time.time()}) + "\n")
        check_replaceable(path, flag)  # again: something may have appeared meanwhile
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    if path.exists():
        old = Path(tempfile.mkdtemp(dir=path.parent, prefix=f".{path.name}.", suffix=".old"))
        os.replace(path, old / "previous")
        os.replace(tmp, path)
        shutil.rmtree(old, ignore_errors=True)
    else:
        os.replace(tmp, path)


def sweep_stale(prefix: str, max_age_s: float = 24 * 3600) -> int:
    """Remove ``$TMPDIR/<prefix><pid>-*`` work directories whose process is gone (a kill -9
    leaves them behind); returns how many. Only directories with edgekit's own prefix."""
    removed = 0
    root = Path(tempfile.gettempdir())
    for entry in root.glob(f"{prefix}*"):
        if not entry.is_dir() or entry.is_symlink():
            continue
        pid = entry.name[len(prefix):].split("-", 1)[0]
        try:
            if pid.isdigit():
                if int(pid) == os.getpid() or _alive(int(pid)):
                    continue
            elif time.time() - entry.stat().st_mtime < max_age_s:
                continue  # an older name without a pid: only once it is clearly abandoned
            shutil.rmtree(entry)
            removed += 1
        except OSError:
            continue
    return removed


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


class InterruptGuard:
    """Remembers a Ctrl-C even when a library swallows the KeyboardInterrupt it raised (an
    exporter that wraps every exception in its own), so a long job stops at its next step
    instead of finishing and exiting 0."""

    def __init__(self):
        self.hit = False
        self._old = None

    def __enter__(self) -> "InterruptGuard":
        # A process started with SIGINT ignored (nohup, a shell's '&', a service) keeps ignoring it.
        if threading.current_thread() is threading.main_thread() and \
                signal.getsignal(signal.SIGINT) is not signal.SIG_IGN:
            self._old = signal.getsignal(signal.SIGINT)

            def handler(signum, frame):
                self.hit = True
                raise KeyboardInterrupt

            signal.signal(signal.SIGINT, handler)
        return self

    def check(self) -> None:
        if self.hit:
            raise KeyboardInterrupt

    def __exit__(self, *exc) -> bool:
        if self._old is not None:
            signal.signal(signal.SIGINT, self._old)
        return False


def open_parquet(path):
    """A pyarrow ParquetFile for streaming: without pre-buffering, pyarrow reads whole column chunks ahead
    and keeps them in its pool, so the peak memory of a pass grew with the file (226 MB more at 1M rows)."""
    import pyarrow.parquet as pq

    return pq.ParquetFile(path, pre_buffer=False, buffer_size=1 << 20)

