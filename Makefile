# The README's two commands: `make demo` and `make test`. Both create or update .venv first.
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
PIP := $(PY) -m pip
EDGEKIT := $(VENV)/bin/edgekit
STAMP := $(VENV)/.edgekit-installed
# The CPU build of torch lies on this machine's disk; constraints.txt pins it (see the file).
INSTALL := $(PIP) install --quiet --disable-pip-version-check -c constraints.txt

.PHONY: demo test test-arm64 bench install clean wheel

install: $(STAMP)

$(STAMP): pyproject.toml constraints.txt toolkit/edgekit/convert/tool_env.py
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PIP) install --quiet --disable-pip-version-check --upgrade pip
	$(INSTALL) -e ".[all,dev]"
	# ONNX -> TFLite's converter (onnx2tf, TensorFlow) in its own environment: its pins clash with ours
	$(PY) -m edgekit.convert.tool_env install onnx2tf
	touch $(STAMP)

demo: $(STAMP)
	$(EDGEKIT) optimize --target raspberrypi

test: $(STAMP)
	$(VENV)/bin/ruff check toolkit tests benchmarks
	$(PY) -m pytest -q -ra

# The device side on ARM64 under QEMU (root on x86_64 Debian): the Pi install script, the runtime,
# its fallback chain, the log store and sync, on emulated Cortex-A72 and Cortex-A76.
test-arm64: $(STAMP)
	$(PY) tests/arm64/run_arm64.py

# Performance goals: every script in benchmarks/ measured side by side, one summary table.
bench: $(STAMP)
	$(PY) benchmarks/run_all.py

wheel: $(STAMP)
	$(PIP) wheel --no-deps -w dist .

clean:
	rm -rf $(VENV) dist build .pytest_cache edgekit-out
