# Set-up and entry points. Every target creates what it needs, so each works on a fresh machine.
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
# torch is installed first and pinned: 2.13.0 is the CPU build available on the development machines;
# an unpinned torch would pull a multi-GB CUDA build.
TORCH := torch==2.13.0

.PHONY: install test demo clean

$(VENV)/.installed: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet $(TORCH)
	$(PY) -m pip install --quiet -e '.[test]' $(TORCH)
	touch $@

install: $(VENV)/.installed

test: install
	$(VENV)/bin/pytest -q tests

demo: install
	$(VENV)/bin/emoray demo

clean:
	rm -rf $(VENV) build *.egg-info
