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

package-test: package
	rm -rf /tmp/photomend-dist-copy && cp -r dist/photomend /tmp/photomend-dist-copy
	env -i HOME=$$HOME PATH=/usr/bin:/bin QT_QPA_PLATFORM=offscreen /tmp/photomend-dist-copy/photomend --self-test
	env -i HOME=$$HOME PATH=/usr/bin:/bin QT_QPA_PLATFORM=offscreen /tmp/photomend-dist-copy/photomend-gui --self-test

clean:
	rm -rf build dist restored .pytest_cache
