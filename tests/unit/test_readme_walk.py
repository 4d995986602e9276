"""The README walk (benchmarks/readme_walk.py) reads the README's blocks as a user pastes them, and
every special case it makes (a setup, a replaced word, a skip, an exit code) names a command the
README still has: a README edit that orphans one fails here, not 40 minutes into a walk."""

import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT / "benchmarks"))

import readme_walk  # noqa: E402


def test_blocks_are_read_as_a_user_pastes_them():
    text = ("# Title\n\n```sh\nedgekit a --x 1   # a comment\nedgekit b \\\n    --y '#2'\n```\n\n"
            "## Sec\n```sh\ncat > f.toml <<'TOML'\nk = 1\nTOML\nedgekit c\n```\n```python\nx = 1\n```\n")
    found = readme_walk.blocks(text)
    assert [b.heading for b in found] == ["Title", "Sec"]
    assert found[0].commands == ["edgekit a --x 1", "edgekit b --y '#2'"]
    assert found[1].commands == ["cat > f.toml <<'TOML'\nk = 1\nTOML\nedgekit c"]  # one script


def test_every_special_case_names_a_command_the_readme_has():
    readme = (ROOT / "README.md").read_text()
    commands = [c for b in readme_walk.blocks(readme) for c in b.commands]
    keys = (list(readme_walk.WALK_SETUP) + [old for old, _, _ in readme_walk.WALK_REPLACE]
            + [p for p, _ in readme_walk.WALK_SKIP] + list(readme_walk.WALK_EXIT))
    stale = [k for k in keys if not any(k in c for c in commands)]
    assert not stale, f"the walk special-cases commands the README no longer has: {stale}"
    # the files the README tells the reader to write exist where the walk looks for them
    files = {name: readme_walk.toml_after(readme, first) for name, first in readme_walk.TOML_FILES.items()}
    assert "token_file =" in files["sync.toml"] and "[gate]" in files["loop.toml"]


def test_servers_run_in_the_background_on_their_port():
    assert readme_walk.background_port("edgekit serve a.ekb --port 8001") == (True, 8001)
    assert readme_walk.background_port("edgekit collector serve --store b/") == (True, 8080)
    assert readme_walk.background_port("edgekit sync run --config s.toml --once --timeout 60") == (False, None)
    assert readme_walk.background_port("edgekit serve-ish") == (False, None)
