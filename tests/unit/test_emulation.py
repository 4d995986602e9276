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
