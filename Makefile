# Set-up and everyday commands. Each target creates the virtualenv and installs
# the project first if needed, so `make train` or `make test` is all a fresh
# machine needs (Python 3.10+ with venv).
PYTHON ?= python3
VENV ?= .venv
CONFIG ?= configs/default.py
WORKDIR ?= workdir/default
# Extra trainer flags, e.g. ARGS="--config.train.num_epochs=5".
ARGS ?=

VENV_PYTHON := $(VENV)/bin/python
INSTALLED := $(VENV)/.installed

.PHONY: install train test tensorboard benchmark clean

install: $(INSTALLED)

$(INSTALLED): setup.py
	$(PYTHON) -m venv $(VENV)
	$(VENV_PYTHON) -m pip install --quiet --upgrade pip
	$(VENV_PYTHON) -m pip install --quiet -e ".[cpu,test]"
	touch $@

train: $(INSTALLED)
	$(VENV_PYTHON) -m trainer.main --config=$(CONFIG) --workdir=$(WORKDIR) $(ARGS)

test: $(INSTALLED)
	$(VENV_PYTHON) -m pytest -n 2 --dist loadfile tests

tensorboard: $(INSTALLED)
	$(VENV)/bin/tensorboard --logdir $(WORKDIR)

benchmark: $(INSTALLED)
	$(VENV_PYTHON) scripts/benchmark.py --config=$(CONFIG) $(ARGS)

clean:
	rm -rf $(VENV) *.egg-info .pytest_cache
