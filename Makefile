# musickv-jax: `make demo` sets up and runs the demo edit, `make test` sets up and runs the tests.
PYTHON ?= python3
VENV   ?= .venv
PY     := $(VENV)/bin/python
PIP    := $(PY) -m pip

.PHONY: demo test test-fast test-slow test-studio test-browser setup setup-test clean

$(VENV)/.runtime: requirements.txt pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(PIP) install -q --upgrade pip
	$(PIP) install -q -r requirements.txt
	$(PIP) install -q --no-deps -e .
	touch $@

# One pip command for runtime and test requirements, so the CPU torch pin holds for everything.
# Then the stable-audio-tools reference without dependencies (requirements-reference.txt says why),
# and torchaudio's native libraries (built for another torch) removed so it imports as pure Python.
$(VENV)/.test: requirements.txt requirements-test.txt requirements-reference.txt pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(PIP) install -q --upgrade pip
	$(PIP) install -q -r requirements.txt -r requirements-test.txt
	$(PIP) install -q --no-deps --ignore-requires-python -r requirements-reference.txt
	$(PY) -c "import importlib.util, pathlib; [p.unlink() for p in (pathlib.Path(importlib.util.find_spec('torchaudio').origin).parent / 'lib').glob('*.so')]"
	$(PY) -c "import stable_audio_tools.models.diffusion, stable_audio_tools.models.autoencoders" >/dev/null
	$(PIP) install -q --no-deps -e .
	touch $(VENV)/.runtime $@

setup: $(VENV)/.runtime
setup-test: $(VENV)/.test

demo: $(VENV)/.runtime
	$(VENV)/bin/musickv-demo

# The full default suite (what CI runs): parity, properties, command lines, the demo, the wheel. Two
# workers (pytest-xdist), one file each at a time; one persistent compilation cache (tests/conftest.py).
test: $(VENV)/.test
	$(PY) -m pytest -m "not slow and not studio and not browser" -q -n 2 --dist loadfile

# The library's core in under a minute: for the inner loop while changing code. Its compiled programs
# are kept between runs (.cache/xla-test-fast), so the second run onwards compiles only what changed.
test-fast: $(VENV)/.test
	MUSICKV_TEST_XLA_CACHE=$(CURDIR)/.cache/xla-test-fast $(PY) -m pytest -m fast -q

test-slow: $(VENV)/.test
	$(PY) -m pytest -m slow -q -s

# musickv-studio as a real server through its API: four clients at once, equality with musickv-edit.
test-studio: $(VENV)/.test
	$(PY) -m pytest -m studio -q -s

# musickv-studio's page in headless Chromium (apt-get install chromium chromium-driver); saves docs/studio.png.
test-browser: $(VENV)/.test
	MUSICKV_SCREENSHOT=docs/studio.png $(PY) -m pytest -m browser -q -s

clean:
	rm -rf $(VENV) .cache outputs build *.egg-info
