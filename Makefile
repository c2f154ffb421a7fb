# PhotoMend: every target creates .venv with the pinned dependencies when it is missing.
PYTHON ?= python3
VENV   := .venv
PY     := $(VENV)/bin/python
STAMP  := $(VENV)/.photomend-installed

.PHONY: venv demo test test-fast lint bench package package-test clean

$(STAMP): pyproject.toml
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -e '.[dev]'
	touch $(STAMP)

venv: $(STAMP)

demo: $(STAMP)
	$(VENV)/bin/photomend restore resources/samples -o restored --report restored/report.json --summary

test: $(STAMP)
	QT_QPA_PLATFORM=offscreen $(PY) -m pytest -q

test-fast: $(STAMP)
	QT_QPA_PLATFORM=offscreen $(PY) -m pytest -q -m "not slow"

lint: $(STAMP)
	$(VENV)/bin/ruff check engine desktop tests

bench: $(STAMP)
	$(VENV)/bin/photomend bench

package: $(STAMP)
	$(VENV)/bin/pyinstaller --noconfirm --clean build.spec
	du -sh dist/photomend

# Copies dist/photomend elsewhere and runs both --self-tests (and --help) with an empty environment
# (no venv, no PYTHONPATH, no DISPLAY); see docs/PACKAGING.md. Fails, never skips, without a bundle.
package-test: package
	PHOTOMEND_REQUIRE_DIST=1 $(PY) -m pytest -q tests/test_package.py

clean:
	rm -rf build dist restored .pytest_cache
