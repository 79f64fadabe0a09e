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
# A second environment with TensorFlow 2.20, the last release built for TPUs.
VENV_TF220 ?= .venv-tf2.20
INSTALLED_TF220 := $(VENV_TF220)/.installed

.PHONY: install train test test-slow test-tf2.20 tensorboard benchmark clean

install: $(INSTALLED)

$(INSTALLED): setup.py
	$(PYTHON) -m venv $(VENV)
	$(VENV_PYTHON) -m pip install --quiet --upgrade pip
	$(VENV_PYTHON) -m pip install --quiet -e ".[cpu,test,eval,profile,tune,export,pipeline]"
	touch $@

train: $(INSTALLED)
	$(VENV_PYTHON) -m trainer.main --config="$(CONFIG)" --workdir="$(WORKDIR)" $(ARGS)

test: $(INSTALLED)
	$(VENV_PYTHON) -m pytest -n 2 --dist loadfile -m "not slow" tests

# Long recovery checks (repeated kill -9, SIGTERM and resume); CI runs them too.
test-slow: $(INSTALLED)
	$(VENV_PYTHON) -m pytest -n 2 --dist loadfile -m slow tests

$(INSTALLED_TF220): setup.py
	$(PYTHON) -m venv $(VENV_TF220)
	$(VENV_TF220)/bin/python -m pip install --quiet --upgrade pip
	$(VENV_TF220)/bin/python -m pip install --quiet -e ".[cpu,test,eval,profile,tune,export,pipeline]" "tensorflow==2.20.*"
	touch $@

# The whole suite again on TensorFlow 2.20 (what TPU VMs run).
test-tf2.20: $(INSTALLED_TF220)
	$(VENV_TF220)/bin/python -c "import tensorflow as tf; assert tf.__version__.startswith('2.20'), tf.__version__"
	$(VENV_TF220)/bin/python -m pytest -n 2 --dist loadfile -m "not slow" tests

tensorboard: $(INSTALLED)
	$(VENV)/bin/tensorboard --logdir "$(WORKDIR)"

benchmark: $(INSTALLED)
	$(VENV_PYTHON) scripts/benchmark.py --config="$(CONFIG)" $(ARGS)

clean:
	rm -rf $(VENV) $(VENV_TF220) *.egg-info .pytest_cache
