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

.PHONY: install book test lint unit notebooks nbval smoke-book browser system-deps clean clean-notebooks

$(STAMP): requirements.txt pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -r requirements.txt
	touch $(STAMP)

install: $(STAMP)

## make book: build the HTML book, executing every chapter (CPU: the quick profile, bundled data), then
## its Chinese edition into _build/html/zh/ from the same executed chapters (tools/translated_book.py).
book: $(STAMP)
	$(BIN)/jupyter-book build . --builder html -W -n --keep-going
	$(BIN)/python tools/translated_book.py build --cache _build/.jupyter_cache --html _build/html/zh
	@echo "Open _build/html/index.html (中文版: _build/html/zh/index.html)"

## make test: everything CI runs. The regression check on recorded outputs runs inside `notebooks`, on the
## chapters it has just executed (tests/test_notebooks.py); `make nbval` runs the same check with nbval itself,
## executing every chapter a second time.
test: $(STAMP) system-deps lint unit notebooks browser

lint: $(STAMP)
	$(BIN)/ruff check .

unit: $(STAMP)
	$(BIN)/pytest tests -q -m "not notebooks and not browser" -p no:cacheprovider

notebooks: $(STAMP)
	$(BIN)/pytest tests -q -m notebooks -p no:cacheprovider

nbval: $(STAMP)
	BOOK_PROFILE=smoke BOOK_ARTIFACTS_DIR=$(CURDIR)/_build/nbval-artifacts \
	  $(BIN)/pytest --nbval-lax --nbval-sanitize-with tests/nbval_sanitize.cfg -p no:cacheprovider -q \
	  $$($(BIN)/python tools/book.py)

# The browser test reads a book built under the smoke profile into its own folder (and cache), so it
# never mixes with the quick-profile book of `make book`. It renders the chapters `make notebooks` just
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
	BOOK_HTML=_build/smoke/_build/html $(BIN)/pytest tests -q -m browser -p no:cacheprovider

## make clean-notebooks: strip outputs except nbval expectations (cells marked NBVAL_CHECK_OUTPUT).
clean-notebooks: $(STAMP)
	$(BIN)/python tools/notebooks.py clean

clean:
	rm -rf _build
