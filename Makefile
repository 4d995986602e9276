# The README's two commands: `make demo` and `make test`. Both create or update .venv first.
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
PIP := $(PY) -m pip
EDGEKIT := $(VENV)/bin/edgekit
STAMP := $(VENV)/.edgekit-installed
# The CPU build of torch lies on this machine's disk; constraints.txt pins it (see the file).
INSTALL := $(PIP) install --quiet --disable-pip-version-check -c constraints.txt

.PHONY: demo test bench install clean wheel

install: $(STAMP)

$(STAMP): pyproject.toml constraints.txt
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PIP) install --quiet --disable-pip-version-check --upgrade pip
	$(INSTALL) -e ".[all,dev]"
	touch $(STAMP)

demo: $(STAMP)
	$(EDGEKIT) optimize --target raspberrypi

test: $(STAMP)
	$(VENV)/bin/ruff check toolkit tests benchmarks
	$(PY) -m pytest -q -ra

# Performance goals: every script in benchmarks/ measured side by side, one summary table.
bench: $(STAMP)
	$(PY) benchmarks/run_all.py

wheel: $(STAMP)
	$(PIP) wheel --no-deps -w dist .

clean:
	rm -rf $(VENV) dist build .pytest_cache edgekit-out
