# Two commands for a fresh machine: `make demo` and `make test`.
# Both create .venv and install the pinned stack when it is missing.
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.torchrec-hot-installed

TORCH_VERSION := 2.13.0
FBGEMM_VERSION := 1.8.0
TORCHREC_VERSION := 1.8.0
# torchrec's runtime needs, installed by hand because torchrec is installed --no-deps
# (its metadata asks for the CUDA fbgemm-gpu wheel, which a CPU machine must not get).
TORCHREC_DEPS := tensordict==0.15.3 torchmetrics==1.0.3 lightning-utilities==0.15.3 \
	tqdm==4.70.1 pyre-extensions==0.0.32 iopath==0.1.10 numpy==2.4.6
# CUDA machines get the CUDA fbgemm wheel; everything else the CPU one.
FBGEMM_PACKAGE := $(shell command -v nvidia-smi >/dev/null 2>&1 && nvidia-smi -L >/dev/null 2>&1 \
	&& echo fbgemm-gpu || echo fbgemm-gpu-cpu)

.PHONY: install test demo lint clean

$(STAMP): pyproject.toml Makefile
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q torch==$(TORCH_VERSION) $(FBGEMM_PACKAGE)==$(FBGEMM_VERSION)
	$(PY) -m pip install -q --no-deps torchrec==$(TORCHREC_VERSION)
	$(PY) -m pip install -q $(TORCHREC_DEPS)
	$(PY) -m pip install -q -e '.[dev,plot,profile]'
	touch $(STAMP)

install: $(STAMP)

test: $(STAMP)
	$(PY) -m ruff check .
	$(VENV)/bin/lint-imports
	$(PY) -m pytest -q -p no:cacheprovider

demo: $(STAMP)
	bash examples/demo.sh

clean:
	rm -rf $(VENV) build *.egg-info
