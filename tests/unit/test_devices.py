import json
import shutil
from pathlib import Path

import pytest

from edgekit.devices import all_profiles, host_profile, load_profile_file, resolve
from edgekit.errors import ProfileError

ROOT = Path(__file__).resolve().parents[2]
REQUIRED = ["raspberrypi4", "raspberrypi5", "jetson-nano", "jetson-orin-nano", "coral-edgetpu",
            "android-arm64", "x86-avx2", "x86-avx512-vnni", "nvidia-gpu", "host"]


def test_every_required_profile_ships_validates_and_cites_sources():
    profiles = all_profiles()
    for name in REQUIRED:
        assert name in profiles, name
        profile = profiles[name]
        assert profile.sources, f"{name} cites no source"
        assert profile.estimator.peak_gops_int8 > 0
    # one file per profile in profiles/, each loading on its own
    for path in (ROOT / "profiles").glob("*.toml"):
        assert load_profile_file(path).id == path.stem


@pytest.mark.parametrize("name, expected", [("raspberrypi", "raspberrypi5"), ("pi4", "raspberrypi4"),
                                            ("coral", "coral-edgetpu"), ("jetson-nano", "jetson-nano")])
def test_resolve_ids_and_aliases(name, expected):
    assert resolve(name).id == expected


def test_device_facts_that_drive_plans():
    pi4, pi5, coral = resolve("raspberrypi4"), resolve("raspberrypi5"), resolve("coral-edgetpu")
    assert not pi4.cpu.has("asimddp") and not pi4.cpu.has("asimdhp")
    assert pi5.cpu.has("asimddp") and pi5.cpu.has("asimdhp")
    assert coral.constraints.full_int8_required and coral.constraints.static_shapes
    assert coral.constraints.max_rank == 3
    assert resolve("x86-avx512-vnni").cpu.has("avx512_vnni")
    assert resolve("nvidia-gpu").precisions[0] == "fp16"


def test_unknown_target_suggests_close_names():
    with pytest.raises(ProfileError) as info:
        resolve("rasberrypi")
    assert "did you mean raspberrypi" in str(info.value)


def test_host_profile_reads_this_machine():
    host = host_profile()
    assert host.cpu.cores >= 1 and host.memory.ram_mb > 0
    assert "onnxruntime-cpu" in host.runtimes
    assert host.estimator.peak_gflops_fp32 > 0
    assert host.precisions[-1] in ("fp32", "int8")


def _write(tmp_path: Path, text: str, name="board.toml") -> Path:
    path = tmp_path / name
    path.write_text(text)
    return path


def test_host_flags_are_the_ones_cpuid_gives_this_process(monkeypatch):
    """Under QEMU (-cpu Haswell on an AVX-512 host) /proc/cpuinfo still lists the host's flags,
    while onnxruntime's kernels follow cpuid: a flag cpuid denies is dropped, and with it the
    flags cpuid cannot be asked about (AVX-VNNI, AMX); where both agree, nothing changes."""
    from edgekit.devices import host

    info = {"flags": "fpu sse4_2 avx avx2 fma avx512f avx512bw avx512_vnni avx_vnni amx_int8 avx512_fp16 sha_ni"}
    haswell = {"AVX": True, "AVX2": True, "FMA3": True, "AVX512F": False, "AVX512BW": False, "AVX512VNNI": False,
               "AVX512FP16": False}
    monkeypatch.setattr(host, "_cpuid_features", lambda: haswell)
    assert host._flags(info) == ("avx", "avx2", "fma", "fpu", "sha_ni", "sse4_2")
    monkeypatch.setattr(host, "_cpuid_features", lambda: {k: True for k in haswell})
    assert host._flags(info) == tuple(sorted(info["flags"].split()))


def test_the_host_profile_agrees_with_cpuid_on_this_cpu():
    """Real or emulated, the profile edgekit plans int8 with says what the kernels will see."""
    from edgekit.devices.host import _CPUID_NAMES, _cpuid_features

    seen, isa = _cpuid_features(), set(host_profile().cpu.isa)
    for flag in isa & set(_CPUID_NAMES):
        assert seen.get(_CPUID_NAMES[flag], True), f"{flag} is in the profile, cpuid says no"


def test_bad_profile_names_file_and_key(tmp_path):
    text = (ROOT / "profiles" / "raspberrypi4.toml").read_text().replace("cores = 4", 'cores = "four"')
    path = _write(tmp_path, text)
    with pytest.raises(ProfileError) as info:
        load_profile_file(path)
    message = str(info.value)
    assert str(path) in message and "cpu.cores" in message and "expected an integer" in message


def test_bad_toml_and_unknown_runtime(tmp_path):
    with pytest.raises(ProfileError, match="not valid TOML"):
        load_profile_file(_write(tmp_path, "id = [unclosed"))
    text = (ROOT / "profiles" / "raspberrypi4.toml").read_text().replace('"onnxruntime-cpu"]', '"onnx-magic"]')
    with pytest.raises(ProfileError, match="unknown runtime 'onnx-magic'"):
        load_profile_file(_write(tmp_path, text, "b2.toml"))


def test_user_profiles_by_path_and_env(tmp_path, monkeypatch):
    text = (ROOT / "profiles" / "raspberrypi4.toml").read_text()
    text = text.replace('id = "raspberrypi4"', 'id = "myboard"').replace('aliases = ["rpi4", "pi4"]', 'aliases = ["mb"]')
    path = _write(tmp_path, text, "myboard.toml")
    assert resolve(str(path)).id == "myboard"
    monkeypatch.setenv("EDGEKIT_PROFILES", str(tmp_path))
    assert resolve("mb").id == "myboard"
    assert "myboard" in all_profiles()
    monkeypatch.setenv("EDGEKIT_PROFILES", str(tmp_path / "missing"))
    with pytest.raises(ProfileError, match="EDGEKIT_PROFILES"):
        all_profiles()


def test_user_profile_cannot_shadow_a_shipped_id(tmp_path, monkeypatch):
    shutil.copy(ROOT / "profiles" / "raspberrypi4.toml", tmp_path / "raspberrypi4.toml")
    text = (tmp_path / "raspberrypi4.toml").read_text().replace("ram_mb = 4096", "ram_mb = 8192")
    (tmp_path / "raspberrypi4.toml").write_text(text)
    monkeypatch.setenv("EDGEKIT_PROFILES", str(tmp_path))
    with pytest.raises(ProfileError, match="uses the id 'raspberrypi4', already taken by .*raspberrypi4.toml"):
        resolve("raspberrypi4")
    assert resolve(str(tmp_path / "raspberrypi4.toml")).memory.ram_mb == 8192  # by path it is still usable


@pytest.mark.parametrize("kind", ["binary", "directory"])
def test_profile_that_is_not_a_toml_file(tmp_path, kind):
    path = tmp_path / "weird.toml"
    if kind == "binary":
        path.write_bytes(b"\x89PNG\r\n\x1a\n\xff\xfe")
        with pytest.raises(ProfileError, match="is not a text file"):
            resolve(str(path))
    else:
        path.mkdir()
        with pytest.raises(ProfileError, match="is not a file"):
            resolve(str(path))


@pytest.mark.parametrize("bad", ["../../evil", "", "a/b", " pi", "pi\n5"])
def test_a_profile_id_is_a_name_not_a_path(tmp_path, bad):
    """It names output folders (edgekit-out/MODEL-ID): '../../evil' wrote outside edgekit-out."""
    source = (ROOT / "profiles" / "raspberrypi4.toml").read_text()
    path = tmp_path / "board.toml"
    path.write_text(source.replace('id = "raspberrypi4"', f"id = {json.dumps(bad)}"))
    with pytest.raises(ProfileError, match="is not a name"):
        load_profile_file(path)


def test_calibrate_refuses_an_id_that_is_not_a_name_before_measuring(tmp_path):
    from edgekit.errors import EdgekitError
    from edgekit.profile.calibrate import calibrate

    with pytest.raises(EdgekitError, match="--id '../../evil' is not a name"):
        calibrate("http://127.0.0.1:9", tmp_path / "no-token", profile_id="../../evil")
