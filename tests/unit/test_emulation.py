"""The ARM64 root's inputs: this machine's Debian suite and mirror, and the core per target."""

import pytest

from edgekit.devices import resolve
from edgekit.emulation.root import EmulationError, apt_source
from edgekit.emulation.verify import target_cpu


def test_the_suite_and_mirror_come_from_the_machines_apt_sources(tmp_path):
    (tmp_path / "sources.list.d").mkdir()
    (tmp_path / "sources.list.d" / "debian.sources").write_text(
        "Types: deb\n# a comment\nURIs: http://deb.debian.org/debian-security\nSuites: bookworm-security\n"
        "Components: main\n\nTypes: deb deb-src\nURIs: http://mirror.example/debian\nSuites: trixie trixie-updates\n"
        "Components: main\n")
    assert apt_source(tmp_path) == ("trixie", "http://mirror.example/debian")  # security archives skipped


def test_one_line_sources_and_none_at_all(tmp_path):
    (tmp_path / "sources.list").write_text("# deb http://old/ stretch main\n"
                                           "deb [arch=amd64] http://ftp.example/debian bookworm main\n")
    assert apt_source(tmp_path) == ("bookworm", "http://ftp.example/debian")
    with pytest.raises(EmulationError, match="no Debian archive"):
        apt_source(tmp_path / "nothing")


def test_each_board_is_emulated_on_its_own_core():
    assert target_cpu(resolve("raspberrypi4")) == "cortex-a72"  # no sdot, no fp16: the slow int8 path
    assert target_cpu(resolve("raspberrypi5")) == "cortex-a76"


def test_mount_points_are_read_unescaped_and_deepest_first(tmp_path):
    from edgekit.emulation.root import mounts_under

    base = tmp_path / "my root"
    info = tmp_path / "mountinfo"
    escaped = str(base).replace(" ", "\\040")
    info.write_text(f"22 1 0:21 / / rw - ext4 /dev/sda1 rw\n"
                    f"30 22 0:30 / {escaped}/proc rw - proc proc rw\n"
                    f"31 30 0:31 / {escaped}/proc/sys/fs/binfmt_misc rw - binfmt_misc binfmt_misc rw\n"
                    f"32 22 0:32 / {escaped}-other/proc rw - proc proc rw\n")
    assert mounts_under(base, info) == [f"{base}/proc/sys/fs/binfmt_misc", f"{base}/proc"]


def test_an_interrupted_build_leaves_nothing_that_blocks_the_next(tmp_path):
    """What a killed debootstrap leaves: a partial root with /proc still mounted in it, which
    rmtree cannot remove. The next build unmounts it, removes it and says so."""
    import os
    import subprocess

    from edgekit.emulation.root import _clear_partials, mounts_under

    if os.geteuid() != 0:
        pytest.skip("mounting needs root (CI runs as root)")
    root = tmp_path / "arm64-root"
    left = tmp_path / "arm64-root.partial"
    (left / "proc").mkdir(parents=True)
    subprocess.run(["mount", "-t", "proc", "proc", str(left / "proc")], check=True)
    try:
        said = []
        _clear_partials(root, said.append)
        assert not mounts_under(left) and not left.exists()
        assert any("unmounted 1 file system" in line for line in said) and any("removed" in line for line in said)
    finally:
        if mounts_under(left):
            subprocess.run(["umount", "-l", str(left / "proc")])
