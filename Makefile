# Every target does its own set-up (scripts/setup.sh is idempotent and fast when done).
PY := .venv/bin/python
export FIFTYONE_DO_NOT_TRACK := true
export FIFTYONE_PLUGINS_DIR := $(CURDIR)/.plugins

.PHONY: setup demo test test-fast lint app worker clean

setup:
	@bash scripts/setup.sh

demo: setup
	$(PY) -m siamese_quality.demo --data-dir data/demo

test: setup
	$(PY) -m pytest

test-fast: setup
	$(PY) -m pytest -m "not slow"

lint: setup
	$(PY) -m ruff check .

clean:
	rm -rf .venv .plugins data .pytest_cache .ruff_cache

app: setup
	$(PY) -m siamese_quality.demo --data-dir data/demo --app

# runs the operations scheduled from the App (or queued by score(..., num_shards=N))
worker: setup
	.venv/bin/fiftyone delegated launch
