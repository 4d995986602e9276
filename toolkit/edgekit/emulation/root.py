"""An ARM64 Debian root under QEMU user-mode emulation: the Pi's software stack on an x86 box.

Built once with debootstrap from this machine's own Debian suite and mirror (read from its apt
sources, never a hard-coded host), cached, and reused: `make test-arm64` installs edgekit into it
with the Pi's install script and runs the runtime there; `optimize --verify-arm64` runs the
candidates' ARM kernels on a sample. Emulation is ~450x slower than a device, so nothing measured
in here is a latency: only outputs and behaviour count.

Pitfalls this module handles (each found the hard way): pip inside the root needs the host's CA
bundle; onnxruntime crashes when both /proc and /sys are mounted (only /proc is); the default
emulated CPU ("max": SVE/SME) makes OpenBLAS warn, so every run names a real core.
"""

from __future__ import annotations

import contextlib
import fcntl
import os
import re
import shutil
import subprocess
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Iterator, Optional

from ..errors import EdgekitError

# Emulated cores and the boards they stand for: the A72 has no int8 dot product (sdot) and no
# fp16 arithmetic, the A76 has both, so int8 kernels take different code paths on each.
CPUS = {"cortex-a72": "Raspberry Pi 4", "cortex-a76": "Raspberry Pi 5"}
# What the root holds before edgekit is installed (python3-venv: the install script makes a venv).
PACKAGES = ("python3", "python3-venv", "python3-pip", "ca-certificates")
ROOT_FORMAT = 1  # bump when PACKAGES or the build steps change: a cached root is rebuilt
HOST_CA = Path("/etc/ssl/certs/ca-certificates.crt")
BINFMT = Path("/proc/sys/fs/binfmt_misc")
HOST_TOOLS = {"debootstrap": "debootstrap", "update-binfmts": "binfmt-support",
              "qemu-aarch64-static": "qemu-user-static"}
HINT = "run as root on Debian/Ubuntu x86_64 (make arm64-root builds it)"


class EmulationError(EdgekitError):
    """The ARM64 root cannot be built or run."""


def default_root() -> Path:
    return Path(os.environ.get("EDGEKIT_ARM64_ROOT") or "/var/cache/edgekit/arm64-root")


def apt_source(sources_dir: Path = Path("/etc/apt")) -> tuple[str, str]:
    """(suite, mirror) of this machine's main Debian archive, from deb822 or one-line sources."""
    for path in sorted((sources_dir / "sources.list.d").glob("*.sources")):
        for stanza in path.read_text().split("\n\n"):
            fields = {}
            for line in stanza.splitlines():
                if line.strip().startswith("#") or ":" not in line:
                    continue
                key, value = line.split(":", 1)
                fields[key.strip().lower()] = value.split()
            suites, uris = fields.get("suites", []), fields.get("uris", [])
            if "deb" in fields.get("types", []) and suites and uris and "security" not in uris[0]:
                return suites[0], uris[0]
    legacy = sources_dir / "sources.list"
    if legacy.exists():
        for line in legacy.read_text().splitlines():
            parts = [p for p in line.split() if not p.startswith("[")]
            if len(parts) >= 3 and parts[0] == "deb" and "security" not in parts[1]:
                return parts[2], parts[1]
    raise EmulationError("no Debian archive found in /etc/apt's sources", "debootstrap needs a suite and a mirror")


def _check_host() -> None:
    if os.uname().machine != "x86_64":
        raise EmulationError(f"ARM64 emulation is for x86_64 hosts; this one is {os.uname().machine}", HINT)
    if os.geteuid() != 0:
        raise EmulationError("building and entering the ARM64 root needs root (debootstrap, chroot, mount)", HINT)


def ensure_tools(log: Callable[[str], None] = print) -> None:
    """qemu-user-static, binfmt-support and debootstrap from Debian, and aarch64 binfmt on."""
    _check_host()
    missing = sorted({pkg for tool, pkg in HOST_TOOLS.items() if not shutil.which(tool)})
    if missing:
        log(f"installing {' '.join(missing)} with apt-get")
        env = dict(os.environ, DEBIAN_FRONTEND="noninteractive")
        for cmd in (["apt-get", "update", "-qq"], ["apt-get", "install", "-y", "-qq", *missing]):
            done = subprocess.run(cmd, env=env, capture_output=True, text=True)
            if done.returncode:
                raise EmulationError(f"{' '.join(cmd)} failed: {done.stderr.strip()[-300:]}", HINT)
    if not (BINFMT / "register").exists():
        done = subprocess.run(["mount", "-t", "binfmt_misc", "binfmt_misc", str(BINFMT)], capture_output=True,
                              text=True)
        if done.returncode:
            raise EmulationError(f"cannot mount binfmt_misc: {done.stderr.strip()}", HINT)
    entry = BINFMT / "qemu-aarch64"
    if not entry.exists() or not entry.read_text().startswith("enabled"):
        subprocess.run(["update-binfmts", "--enable", "qemu-aarch64"], capture_output=True, text=True)
    if not entry.exists() or not entry.read_text().startswith("enabled"):
        raise EmulationError("the kernel does not run aarch64 binaries through QEMU (binfmt qemu-aarch64 is off)",
                             "apt-get install qemu-user-static binfmt-support, then update-binfmts --enable qemu-aarch64")


@contextlib.contextmanager
def _locked(root: Path) -> Iterator[None]:
    """One builder or user of a root at a time (CI and a developer may share the cache)."""
    root.parent.mkdir(parents=True, exist_ok=True)
    with open(root.parent / f".{root.name}.lock", "w") as fh:
        fcntl.flock(fh, fcntl.LOCK_EX)
        yield


def _stamp(root: Path) -> Path:
    return root / "etc" / "edgekit-arm64-root"


def _unescape(field: str) -> str:
    """A mount point as /proc/self/mountinfo writes it (space, tab, newline and backslash octal)."""
    return re.sub(r"\\([0-7]{3})", lambda m: chr(int(m.group(1), 8)), field)


def mounts_under(path: Path, mountinfo: Path = Path("/proc/self/mountinfo")) -> list[str]:
    """Mount points at or below ``path``, deepest first (the order they must be unmounted in)."""
    base = os.path.realpath(path)
    try:
        lines = mountinfo.read_text().splitlines()
    except OSError:
        return []
    points = {_unescape(line.split()[4]) for line in lines if len(line.split()) > 4}
    return sorted((p for p in points if p == base or p.startswith(base + "/")), key=len, reverse=True)


def unmount_under(path: Path, log: Callable[[str], None] = print) -> list[str]:
    """Unmount whatever is mounted inside ``path``: debootstrap mounts /proc and /sys in its
    target and a killed run leaves them there, where no rmtree can remove them."""
    done = []
    for point in mounts_under(path):
        if subprocess.run(["umount", point], capture_output=True).returncode:
            subprocess.run(["umount", "-l", point], capture_output=True)  # busy: detach it now, free it later
        done.append(point)
    if done:
        log(f"unmounted {len(done)} file system(s) an interrupted run left under {path}: {', '.join(done)}")
    return done


def _clear_partials(root: Path, log: Callable[[str], None]) -> None:
    """Remove the half-built roots of earlier, interrupted builds (their mounts first). One that
    still cannot be removed is left, said, and built around: every build starts in a fresh folder."""
    for partial in sorted(root.parent.glob(f"{root.name}.partial*")):
        unmount_under(partial, log)
        try:
            shutil.rmtree(partial)
            log(f"removed {partial}, left by an interrupted build")
        except OSError as exc:
            log(f"could not remove {partial} ({exc}); building in a fresh folder beside it")


def build_root(root: Optional[Path] = None, log: Callable[[str], None] = print) -> Path:
    """The cached ARM64 root, built with debootstrap when missing or of an older format. Safe to
    interrupt: a build runs in a fresh partial folder, unmounts what it mounted on the way out,
    and the next build clears what a killed one left."""
    root = Path(root or default_root())
    ensure_tools(log)
    suite, mirror = apt_source()
    want = f"format={ROOT_FORMAT} suite={suite}"
    with _locked(root):
        stamp = _stamp(root)
        if stamp.exists() and stamp.read_text().strip() == want:
            return root
        _clear_partials(root, log)
        partial = root.with_name(f"{root.name}.partial-{os.getpid()}-{time.time_ns()}")
        log(f"building an ARM64 {suite} root in {root} from {mirror} (debootstrap, a few minutes, once)")
        start = time.monotonic()
        cmd = ["debootstrap", "--arch=arm64", "--variant=minbase", f"--include={','.join(PACKAGES)}",
               suite, str(partial), mirror]
        try:
            done = subprocess.run(cmd, capture_output=True, text=True)
        finally:
            unmount_under(partial, log)
        if done.returncode:
            tail = (done.stdout + done.stderr).strip().splitlines()[-5:]
            raise EmulationError(f"debootstrap failed: {' | '.join(tail)}", f"see {partial}/debootstrap/debootstrap.log")
        _stamp(partial).write_text(want + "\n")
        # Only a root this module built is ever replaced (the stamp says so).
        if root.exists():
            if not stamp.exists():
                raise EmulationError(f"{root} exists and was not made by edgekit; not replacing it",
                                     "set EDGEKIT_ARM64_ROOT to another folder")
            unmount_under(root, log)  # a killed run may have left /proc mounted in it
            shutil.rmtree(root)
        partial.rename(root)
        log(f"ARM64 root ready in {time.monotonic() - start:.0f} s")
    return root


@dataclass(frozen=True)
class Session:
    """An entered root: run commands in it on a chosen emulated core."""

    root: Path

    def run(self, argv: list[str], cpu: str = "cortex-a72", env: Optional[dict] = None, timeout: float = 1800,
            check: bool = True, capture: bool = True) -> subprocess.CompletedProcess:
        if cpu not in CPUS:
            raise EmulationError(f"unknown emulated CPU {cpu!r}", f"one of {', '.join(CPUS)}")
        full_env = {"PATH": "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin", "HOME": "/root",
                    "LANG": "C.UTF-8", "QEMU_CPU": cpu, "PIP_CERT": "/etc/ssl/certs/ca-certificates.crt",
                    "PIP_DISABLE_PIP_VERSION_CHECK": "1", "PYTHONUNBUFFERED": "1", **(env or {})}
        done = subprocess.run(["chroot", str(self.root), *argv], env=full_env, capture_output=capture, text=True,
                              timeout=timeout)
        if check and done.returncode:
            out = ((done.stdout or "") + (done.stderr or "")).strip().splitlines()[-12:]
            raise EmulationError(f"{' '.join(argv[:3])} failed on emulated {cpu} (exit {done.returncode}): "
                                 + " | ".join(out), "rerun with --debug for the full output")
        return done

    def path(self, inside: str) -> Path:
        """The host path of a path inside the root."""
        return self.root / inside.lstrip("/")


@contextlib.contextmanager
def entered(root: Optional[Path] = None, log: Callable[[str], None] = print) -> Iterator[Session]:
    """Build or reuse the root, mount /proc (only: onnxruntime crashes with /sys too), give it
    the host's CA bundle and resolver, and undo the mount on the way out."""
    root = build_root(root, log)
    proc = root / "proc"
    with _locked(root.with_name(root.name + ".use")):
        if HOST_CA.exists():
            shutil.copyfile(HOST_CA, root / "etc/ssl/certs/ca-certificates.crt")
        resolv = Path("/etc/resolv.conf")
        if resolv.exists():
            (root / "etc/resolv.conf").unlink(missing_ok=True)
            shutil.copyfile(resolv, root / "etc/resolv.conf")
        mounted = False
        if not os.path.ismount(proc):
            subprocess.run(["mount", "-t", "proc", "proc", str(proc)], check=True)
            mounted = True
        try:
            yield Session(root)
        finally:
            if mounted:
                subprocess.run(["umount", "-l", str(proc)], capture_output=True)
