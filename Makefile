# The README's two commands: `make demo` and `make test`. Both create or update .venv first.
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
PIP := $(PY) -m pip
EDGEKIT := $(VENV)/bin/edgekit
STAMP := $(VENV)/.edgekit-installed
TOOLS := $(VENV)/.edgekit-tools-installed
# The CPU build of torch lies on this machine's disk; constraints.txt pins it (see the file).
# --no-compile: byte-compiling every module of torch, jax and TensorFlow's converters took over half
# of a fresh install (2 min on 2 cores); Python compiles the few modules a run imports on first use.
INSTALL := $(PIP) install --quiet --disable-pip-version-check --no-compile -c constraints.txt

.PHONY: demo test test-arm64 test-haswell bench install clean wheel

install: $(STAMP)

$(STAMP): pyproject.toml constraints.txt
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PIP) install --quiet --disable-pip-version-check --upgrade pip
	$(INSTALL) -e ".[all,dev]"
	touch $(STAMP)

# ONNX -> TFLite's converter (onnx2tf, TensorFlow) in its own environment: its pins clash with ours.
# The tests need it; the demo does not (a run that needs it installs it then, and says so).
$(TOOLS): $(STAMP) toolkit/edgekit/convert/tool_env.py
	@echo "installing onnx2tf's own environment (TensorFlow, about 1.5 GB): a few minutes, once"
	$(PY) -m edgekit.convert.tool_env install onnx2tf
	touch $(TOOLS)

demo: $(STAMP)
	$(EDGEKIT) optimize --target raspberrypi

test: $(STAMP) $(TOOLS)
	$(VENV)/bin/ruff check toolkit tests benchmarks
	$(VENV)/bin/lint-imports --no-cache
	$(PY) -m pytest -q -ra

# The device side on ARM64 under QEMU (root on x86_64 Debian): the Pi install script, the runtime,
# its fallback chain, the log store and sync, on emulated Cortex-A72 and Cortex-A76.
test-arm64: $(STAMP)
	$(PY) tests/arm64/run_arm64.py

# The CPU-dependent int8 tests on an emulated AVX2-only x86 (Haswell: no AVX-512, no VNNI) under
# QEMU user mode, whatever this machine's CPU is.
test-haswell: $(STAMP)
	$(PY) tests/haswell/run_haswell.py

# Performance goals: every script in benchmarks/ measured side by side, one summary table.
bench: $(STAMP) $(TOOLS)
	$(PY) benchmarks/run_all.py

wheel: $(STAMP)
	$(PIP) wheel --no-deps -w dist .

clean:
	rm -rf $(VENV) dist build .pytest_cache edgekit-out
