"""A newcomer's walk through the README: every ``sh`` block's commands, as written, from a fresh clone.

The README is the interface most users meet first, and nothing else checks that its commands
work together in the order it gives them. This script clones the repository (the committed tree,
as CI does), runs ``make demo`` there, activates the venv it made, and runs each command of each
``sh`` block in the clone as a user would type it, with ``HOME`` in the scratch folder (nothing of
this machine's caches or keys). What a user brings along (their own ``model.onnx``, ``net.py``,
calibration data, a device at ``pi.local``) is made by the walk before the block that needs it,
each with a note of what it stands for (``WALK_SETUP``); servers start in the background and are
waited for; a few words are replaced where the README names the reader's own machines
(``WALK_REPLACE``); and the commands that cannot run here say why (``WALK_SKIP``). A command
passes when it exits as the README says (0, or the documented exit code in ``WALK_EXIT``).

Goal: every command of every block works. Prints one line per command, a table per block, and the
tail of the output of each command that failed.

    .venv/bin/python benchmarks/readme_walk.py                 # the whole README (about 40 min)
    .venv/bin/python benchmarks/readme_walk.py --blocks 2,3,5   # some blocks (setups they need run too)
    .venv/bin/python benchmarks/readme_walk.py --list           # the blocks and their commands
    .venv/bin/python benchmarks/readme_walk.py --reuse-venv     # skip make demo's install: this .venv
"""

from __future__ import annotations

import argparse
import os
import re
import shlex
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
FIXTURES = Path(__file__).resolve().parent / "_walk_fixtures.py"


@dataclass
class Block:
    number: int
    heading: str
    line: int
    commands: list[str] = field(default_factory=list)


def blocks(readme: str) -> list[Block]:
    """The README's ``sh`` blocks, each as its commands: comments dropped, backslash continuations
    joined; a block with a here-document is one script, as a user would paste it."""
    found, heading, current, lines = [], "", None, readme.splitlines()
    for number, line in enumerate(lines, 1):
        if line.startswith("#"):
            heading = line.lstrip("#").strip()
        if current is None and line.strip() == "```sh":
            current = Block(len(found) + 1, heading, number)
            body: list[str] = []
            continue
        if current is not None and line.strip() == "```":
            text = "\n".join(body)
            if "<<" in text:
                current.commands = [text]
            else:
                joined = re.sub(r"\\\n\s*", "", text)
                current.commands = [c for c in (strip_comment(x) for x in joined.splitlines()) if c]
            found.append(current)
            current = None
            continue
        if current is not None:
            body.append(line)
    return found


def strip_comment(line: str) -> str:
    """The command without its trailing ``# comment`` (a ``#`` inside quotes or a word stays)."""
    out, quote = [], None
    for i, ch in enumerate(line):
        if quote:
            quote = None if ch == quote else quote
        elif ch in "'\"":
            quote = ch
        elif ch == "#" and (i == 0 or line[i - 1].isspace()):
            break
        out.append(ch)
    return "".join(out).strip()


def toml_after(readme: str, first_command: str) -> str:
    """The ``toml`` block the README shows after the ``sh`` block that holds ``first_command``:
    the file the reader is told to write (sync.toml, loop.toml)."""
    at = readme.index(first_command)
    start = readme.index("```toml\n", at) + len("```toml\n")
    return readme[start:readme.index("```", start)]


# The files the README shows as toml blocks, each after the sh block that starts with this command.
TOML_FILES = {"sync.toml": "edgekit collector add-device pi-kitchen",
              "loop.toml": "edgekit loop run --config loop.toml --once"}

# -- what the walk does around the README's commands ------------------------------------------
# Before the command that starts with the key: what the reader has at hand by then, made with
# edgekit itself where it can be (a fixture name from _walk_fixtures.py, or a shell line).
WALK_SETUP: dict[str, list[str]] = {
    "edgekit targets show ./myboard.toml": ["fixture myboard"],
    "edgekit inspect model.onnx": ["test -e model.onnx || edgekit convert edgekit:digits-cnn --to onnx --out model.onnx"],
    "edgekit inspect model.tflite": ["test -e model.tflite || edgekit convert edgekit:digits-cnn --to tflite --out model.tflite"],
    "edgekit inspect mypkg.models:build": ["fixture factories"],
    "edgekit inspect exported.pt2": ["fixture pt2"],
    "edgekit optimize net.py:build": ["fixture calib"],
    "edgekit optimize det.onnx": ["fixture det"],
    "edgekit optimize silero_vad.onnx": ["fixture silero"],
    "edgekit profile --pyspy": ["fixture my_app"],
    "edgekit calibrate": ["rm -f myboard.toml"],  # the reader's own board, measured this time
    "edgekit bench fp32.onnx": ["cp model.onnx fp32.onnx",
                                "test -e int8.onnx || edgekit quantize model.onnx --precision int8-static --out int8.onnx"],
    "edgekit bench best.tflite --input-data": ["cp model.tflite best.tflite", "fixture samples"],
    "edgekit package edgekit-out/minilm-host": ["test -e release.key || edgekit package --new-key release.key"],
    # the fleet's v1, as the README's release picture has it (the loop's first release is then v2)
    "edgekit run digits.ekb": ["test -e digits.ekb || edgekit package edgekit-out/digits-cnn-raspberrypi5 --out digits.ekb "
                               "--version 1",
                               "fixture digit"],
    "curl -s -F file=@digit.png": ["fixture traffic"],  # a day of users' requests, and their labels
    "edgekit predict digits.ekb": ["fixture digits_table"],
    "edgekit predict minilm.ekb": ["fixture sentences"],
    "edgekit test expect suggest": ["fixture model_tests"],
    "edgekit sync run --config sync.toml": ["readme-toml sync.toml"],
    "edgekit collector serve --ssl-certfile": [
        "openssl req -x509 -newkey rsa:2048 -nodes -keyout c.key -out c.pem -days 1 -subj /CN=localhost 2>/dev/null"],
    "edgekit monitor reference": ["fixture heldout"],
    "edgekit monitor check": ["fixture rules"],
    "edgekit label import": ["fixture label_queue"],  # people filled in the queue's label column
    "edgekit loop run --config loop.toml --once": ["readme-toml loop.toml", "fixture loop_hooks",
                                                   "test -e release.pem || edgekit package --new-key release.pem",
                                                   # the rest of the reader's fleet: a canary of at least
                                                   # 2 devices needs a third to compare with
                                                   "test -e pi-porch.token || edgekit collector add-device pi-porch "
                                                   "--group store-12 > pi-porch.token"],
}
# The README names the reader's machines and placeholders; here they are this machine's.
WALK_REPLACE: list[tuple[str, str, str]] = [
    ("http://pi.local:8765", "http://127.0.0.1:8765", "the device is the agent this walk started"),
    ("https://hooks.example/edgekit", "http://127.0.0.1:8790/hook", "a webhook receiver this walk runs"),
    ("python my_app.py ARGS", "python my_app.py 200", "the reader's app and its arguments"),
    (" [--groups store-12] [--shadow] [--min-devices 2]", " --min-devices 2", "optional parts, one kept"),
    ("release promote|pause|rollback", "release pause", "one of the three"),
    ('--reason "..."', '--reason "walk"', "a reason"),
]
WALK_SKIP: list[tuple[str, str]] = [
    ("make test", "the test suite is CI's job (.ci/run calls make test); the walk checks the README's commands"),
    ("postgresql://edgekit@db/edgekit", "needs a PostgreSQL at host db (the tests cover PostgreSQL)"),
]
WALK_EXIT: dict[str, tuple[int, str]] = {
    "edgekit bench model.onnx --provider cuda --strict-provider": (1, "no GPU here: it must refuse the CPU fallback"),
    "edgekit monitor check": (1, "exit 1 while alerts fire; a fresh walk's tiny window may fire"),
}
# Commands that serve until stopped: started in the background, waited for on their port.
BACKGROUND = {"edgekit serve": 8000, "edgekit collector serve": 8080, "edgekit agent serve": 8765,
              "edgekit sync run": None}
# The walk runs these blocks in this order: the agent section (block 13) comes before the
# commands that need a device.
ORDER_FIRST = {"edgekit agent token agent.token": "edgekit calibrate --device"}


def plan(found: list[Block]) -> list[Block]:
    """README order, except a block that another block needs first."""
    ordered = list(found)
    for needed, before in ORDER_FIRST.items():
        block = next(b for b in ordered if b.commands and b.commands[0].startswith(needed))
        target = next(b for b in ordered if b.commands and b.commands[0].startswith(before))
        ordered.remove(block)
        ordered.insert(ordered.index(target), block)
    return ordered


def replaced(command: str, clone: Path) -> tuple[str, list[str]]:
    notes = []
    if "<run>" in command:  # the README's placeholder: the newest of the loop's runs that has the file
        runs = sorted((p.name for p in (clone / "loop" / "runs").glob("*")), reverse=True)
        path = next(w for w in command.split() if "<run>" in w)
        run = next((r for r in runs if (clone / path.replace("<run>", r)).exists()), runs[0] if runs else None)
        if run:
            command = command.replace("<run>", run)
            notes.append(f"<run> -> {run} (the loop's run)")
    for old, new, why in WALK_REPLACE:
        if old in command:
            command = command.replace(old, new)
            notes.append(f"{old!r} -> {new!r} ({why})")
    return command, notes


def skip_reason(command: str):
    return next((why for pattern, why in WALK_SKIP if pattern in command), None)


def background_port(command: str):
    """(True, port) for a command that serves until stopped; (False, None) otherwise."""
    words = command.split()
    for prefix, port in BACKGROUND.items():
        if command.startswith(prefix + " ") and "--once" not in words:
            if "--port" in words:
                port = int(words[words.index("--port") + 1])
            return True, port
    return False, None


class Walk:
    def __init__(self, clone: Path, env: dict, readme: str):
        self.clone, self.env, self.readme = clone, env, readme
        self.services: dict = {}  # port (or command) -> Popen
        self.results: list[tuple[int, str, str, str]] = []  # block, command, status, detail

    def shell(self, command: str, timeout: float = 1800) -> subprocess.CompletedProcess:
        return subprocess.run(["bash", "-c", command], cwd=self.clone, env=self.env, capture_output=True,
                              text=True, timeout=timeout)

    def setup(self, command: str):
        for key, steps in WALK_SETUP.items():
            if command.startswith(key):
                for step in steps:
                    if step.startswith("fixture "):
                        step = f"python {shlex.quote(str(self.clone / 'benchmarks' / FIXTURES.name))} {step.split()[1]}"
                    elif step.startswith("readme-toml "):
                        name = step.split()[1]
                        (self.clone / name).write_text(toml_after(self.readme, TOML_FILES[name]))
                        step = f"python {shlex.quote(str(self.clone / 'benchmarks' / FIXTURES.name))} toml-{name}"
                    done = self.shell(step)
                    print(f"    setup: {step[:110]} -> {'ok' if done.returncode == 0 else 'FAILED'}", flush=True)
                    if done.returncode != 0:
                        tail = (done.stdout + done.stderr).strip().splitlines()[-8:]
                        return "the walk's own setup failed: " + step + "\n      " + "\n      ".join(tail)
        return None

    def start(self, command: str, port) -> tuple[bool, str]:
        key = port or command
        if key in self.services:
            self.stop(key)
        log = open(self.clone / f"walk-service-{len(self.services)}-{port}.log", "w")
        proc = subprocess.Popen(["bash", "-c", f"exec {command}"], cwd=self.clone, env=self.env, stdout=log,
                                stderr=subprocess.STDOUT, start_new_session=True)
        self.services[key] = proc
        if port is None:
            time.sleep(5)
            return proc.poll() is None, "running" if proc.poll() is None else f"exited {proc.returncode}"
        deadline = time.time() + 180
        while time.time() < deadline:
            if proc.poll() is not None:
                return False, f"exited {proc.returncode}: {Path(log.name).read_text()[-800:]}"
            with socket.socket() as s:
                if s.connect_ex(("127.0.0.1", port)) == 0:
                    return True, f"listening on {port}"
            time.sleep(0.3)
        return False, f"not listening on {port} after 180 s"

    def stop(self, key) -> None:
        proc = self.services.pop(key)
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGTERM)
            try:
                proc.wait(30)
            except subprocess.TimeoutExpired:
                os.killpg(proc.pid, signal.SIGKILL)
                proc.wait()

    def stop_all(self, portless_only: bool = False) -> None:
        for key in list(self.services):
            if not portless_only or isinstance(key, str):
                self.stop(key)

    def run_block(self, block: Block) -> None:
        print(f"\n== block {block.number} (README line {block.line}, {block.heading})", flush=True)
        for original in block.commands:
            command, notes = replaced(original, self.clone)
            why = skip_reason(command)
            shown = original.splitlines()[0][:100]
            if why:
                print(f"  SKIP  {shown}: {why}", flush=True)
                self.results.append((block.number, shown, "skip", why))
                continue
            for note in notes:
                print(f"    as: {note}")
            broken = self.setup(original)
            if broken:  # the walk's bug, not the README's: said, and the walk goes on
                print(f"  FAIL  {shown}: {broken}", flush=True)
                self.results.append((block.number, shown, "fail", broken))
                continue
            started = time.perf_counter()
            serves, port = background_port(command)
            if serves:
                ok, detail = self.start(command, port)
            else:
                try:
                    done = self.shell(command)
                except subprocess.TimeoutExpired:
                    ok, detail = False, "timed out after 30 min"
                else:
                    expected = next((rc for p, (rc, _) in WALK_EXIT.items() if command.startswith(p)), 0)
                    ok = done.returncode == expected or (expected == 1 and done.returncode == 0
                                                         and command.startswith("edgekit monitor check"))
                    if command.startswith("curl") and '{"error"' in done.stdout:  # curl -s exits 0 on a 4xx
                        ok = False
                    tail = (done.stdout + done.stderr).strip().splitlines()
                    detail = f"exit {done.returncode}" + ("" if ok else ":\n      " + "\n      ".join(tail[-12:]))
            seconds = time.perf_counter() - started
            print(f"  {'ok  ' if ok else 'FAIL'}  {shown}  ({seconds:.0f} s) {detail if not ok else ''}", flush=True)
            self.results.append((block.number, shown, "ok" if ok else "fail", detail))
        self.stop_all(portless_only=True)


def clone_and_demo(work: Path, reuse_venv: bool) -> tuple[Path, dict]:
    clone, home = work / "edgekit", work / "home"
    if not clone.exists():
        subprocess.run(["git", "clone", "--quiet", "--no-hardlinks", str(ROOT), str(clone)], check=True)
        home.mkdir()
    else:  # --in: walk again where an earlier walk left its files, on what has been committed since
        subprocess.run(["git", "-C", str(clone), "pull", "--quiet", "--ff-only"], check=True)
    env = {k: v for k, v in os.environ.items() if not k.startswith(("VIRTUAL_ENV", "EDGEKIT_"))}
    env.update(HOME=str(home), PIP_CACHE_DIR=os.environ.get("PIP_CACHE_DIR", str(Path.home() / ".cache" / "pip")),
               PYTHONUNBUFFERED="1")
    if reuse_venv and not (clone / ".venv").exists():
        (clone / ".venv").symlink_to(ROOT / ".venv")
    venv = clone / ".venv"
    env.update(VIRTUAL_ENV=str(venv), PATH=f"{venv / 'bin'}:{env['PATH']}")
    return clone, env


def main() -> int:
    sys.path.insert(0, str(Path(__file__).resolve().parent))
    from _common import Goals, print_table

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--blocks", help="comma-separated block numbers (see --list); default: all")
    parser.add_argument("--in", dest="again", type=Path,
                        help="walk again in the folder of an earlier walk (its files are there): with --blocks")
    parser.add_argument("--list", action="store_true", help="print the blocks and their commands, run nothing")
    parser.add_argument("--reuse-venv", action="store_true",
                        help="use this checkout's .venv instead of make demo's fresh install (quicker; then "
                             "make demo's install step is not walked)")
    args = parser.parse_args()
    readme = (ROOT / "README.md").read_text()
    found = plan(blocks(readme))
    if args.list:
        for block in found:
            print(f"block {block.number} (line {block.line}, {block.heading})")
            for command in block.commands:
                print(f"    {command.splitlines()[0]}")
        return 0
    wanted = {int(n) for n in args.blocks.split(",")} if args.blocks else None
    goals = Goals(__file__)
    work = args.again or Path(tempfile.mkdtemp(prefix="readme-walk-"))  # kept when a command fails
    clone, env = clone_and_demo(work, args.reuse_venv)
    walk = Walk(clone, env, readme)
    try:
        for block in found:
            if wanted is not None and block.number not in wanted:
                continue
            if block.number == 1 and args.reuse_venv:  # make demo without its install: the demo itself
                block = Block(1, block.heading, block.line,
                              ["edgekit optimize --target raspberrypi", *block.commands[1:]])
            walk.run_block(block)
    finally:
        walk.stop_all()
    rows = []
    for number in dict.fromkeys(r[0] for r in walk.results):
        mine = [r for r in walk.results if r[0] == number]
        failed = [r for r in mine if r[2] == "fail"]
        rows.append([number, sum(r[2] == "ok" for r in mine), len(failed), sum(r[2] == "skip" for r in mine)])
        goals.check(f"README block {number}: every command works", f"{len(mine) - len(failed)} of {len(mine)} "
                    f"ok or skipped with a reason" + (f"; failed: {failed[0][1][:60]}" if failed else ""), not failed,
                    baseline="the README as written")
    print()
    print_table(["block", "ok", "failed", "skipped"], rows)
    if goals.exit_code() == 0 and not args.again and not os.environ.get("EDGEKIT_BENCH_KEEP"):
        shutil.rmtree(work, ignore_errors=True)
    else:
        print(f"(walked in {clone}: its files and the services' logs, walk-service-*.log, are kept)")
    return goals.exit_code()


if __name__ == "__main__":
    sys.exit(main())
