# The two commands of the README: `make demo` and `make test`. Each runs `make setup` first.
SHELL := /bin/bash
PYTHON ?= python3
VENV := .venv
STAMP := $(VENV)/.cvasr-installed
DEMO_DIR ?= egs/as_cv7
DEMO_STOP_STAGE ?= 5
# pytest's workers (pytest-xdist; 0: one process): two, the cores of the CI machine. The slow
# tests run the recipe and train, and split between two workers they finish sooner; more workers
# than cores only share them
TEST_WORKERS ?= 2

.PHONY: setup system-deps demo test bench clean-demo

setup: system-deps $(STAMP) $(VENV)/bin/lmplz

system-deps:
	@bash tools/install_system_deps.sh

# Re-installs only when the pins change.
$(STAMP): pyproject.toml requirements/constraints.txt
	@$(PYTHON) -c 'import sys; sys.exit(0 if sys.version_info >= (3, 11) else "cvasr needs Python >= 3.11; run make PYTHON=python3.11 setup")'
	@test -x $(VENV)/bin/python || $(PYTHON) -m venv $(VENV)
	$(VENV)/bin/python -m pip install --disable-pip-version-check -q -c requirements/constraints.txt -e '.[test,export]'
	@touch $@

# KenLM's LM estimator, built once from PyPI's source package (stage 3's word n-gram LM)
$(VENV)/bin/lmplz: tools/install_kenlm.sh | $(STAMP)
	@bash tools/install_kenlm.sh $(VENV)/bin $(VENV)/bin/python

demo: setup
	cd $(DEMO_DIR) && ./run.sh --demo true --stage 0 --stop-stage $(DEMO_STOP_STAGE)

test: setup
	$(VENV)/bin/python -m pytest -n $(TEST_WORKERS)

clean-demo:
	rm -rf $(DEMO_DIR)/data $(DEMO_DIR)/dump $(DEMO_DIR)/exp $(DEMO_DIR)/downloads $(DEMO_DIR)/RESULTS.md

bench: setup
	$(VENV)/bin/python bench/dataprep.py
