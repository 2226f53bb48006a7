# Two commands on a fresh machine:  `make demo`  (the main job)  and  `make test`  (the suite).
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
# CI and developers: build the CUDA kernels too whenever nvcc is there (a broken kernel fails the build)
export CUDA_HOME ?= $(wildcard /usr/local/cuda)

.PHONY: install demo test test-fast bench clean

$(VENV)/.installed: requirements.txt setup.py $(wildcard ops/*.cpp ops/*/*.cpp ops/*/*.cu ops/*/*.h ops/*.py)
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --upgrade pip
	$(PY) -m pip install -r requirements.txt
	$(PY) -m pip install --no-build-isolation -e .
	touch $@

install: $(VENV)/.installed

demo: install
	$(VENV)/bin/bev-ddp demo

# pytest exits 5 when it collected no test: that is a failure, never a silent pass
test: install
	$(PY) -m pytest tests -ra --durations=15; rc=$$?; \
	if [ $$rc -eq 5 ]; then echo "make test: pytest collected no tests" >&2; exit 1; fi; exit $$rc

test-fast: install
	$(PY) -m pytest tests -ra -m "not slow"

bench: install
	$(VENV)/bin/bev-ddp bench all

clean:
	rm -rf build $(VENV) *.egg-info bev_ddp/*.so
