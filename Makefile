# anonmail developer targets. `make` alone lists them.
.DEFAULT_GOAL := help
SHELL := /bin/bash

VENV        := .venv
PYTHON      := $(VENV)/bin/python
PYTEST_ARGS ?=
FUZZ_SECONDS ?= 60
FUZZ_JOBS    ?= 1
FUZZ_TARGETS ?=

.PHONY: help bootstrap test demo bench fuzz clean

help:
	@echo "anonmail make targets:"
	@echo "  make bootstrap   install tor + i2pd (apt, if missing) and the .venv (if stale)"
	@echo "  make test        bootstrap, then run pytest (extra args: PYTEST_ARGS='-k foo')"
	@echo "  make demo        bootstrap, then run 'anonmail demo --network tor' (mail over a private Tor network)"
	@echo "  make bench       bootstrap, then run 'anonmail bench'"
	@echo "  make fuzz        bootstrap, then fuzz every parser FUZZ_SECONDS (60) each; FUZZ_JOBS, FUZZ_TARGETS"
	@echo "  make clean       remove .venv, caches and build artefacts"

bootstrap:
	@bash scripts/bootstrap.sh

# Temporary files of the tests on tmpfs when possible (scripts/test-tmpdir.sh says why);
# `make test TEST_TMPDIR=/tmp` keeps them on disk.
TEST_TMPDIR ?= $(shell bash scripts/test-tmpdir.sh)

test: bootstrap
	TMPDIR=$(TEST_TMPDIR) $(PYTHON) -m pytest -q --durations=15 $(PYTEST_ARGS)

demo: bootstrap
	$(VENV)/bin/anonmail demo --network tor

bench: bootstrap
	$(VENV)/bin/anonmail bench

fuzz: bootstrap
	$(PYTHON) -m fuzz run --seconds $(FUZZ_SECONDS) --jobs $(FUZZ_JOBS) $(FUZZ_TARGETS)

clean:
	rm -rf $(VENV) build dist .pytest_cache .hypothesis simulations/_fastloop.c simulations/_fastloop.*.so
	find . -path ./.git -prune -o -name '*.egg-info' -type d -prune -exec rm -rf {} +
	find . -path ./.git -prune -o -name '__pycache__' -type d -prune -exec rm -rf {} +
