# Two commands on a fresh machine:  `make demo`  (the main job)  and  `make test`  (the suite).
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
# CI and developers: build the CUDA kernels too whenever nvcc is there (a broken kernel fails the build)
export CUDA_HOME ?= $(wildcard /usr/local/cuda)

.PHONY: install demo test test-fast mmdet3d test-mmdet3d flake-check bench gpu-check clean

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

# The optional mmdet3d front end (README, "Using bev_ddp from mmdet3d"): mmcv 2.1.0 built from its source
# distribution with CPU ops (CUDA ops too where nvcc and a GPU are present), reused from the wheel cache
# ~/.cache/bev_ddp/wheels when built before; then mmengine, mmdet, mmdet3d and setup.py's "mmdet3d" extra.
$(VENV)/.mmdet3d: $(VENV)/.installed tools/build_mmdet3d.py setup.py
	$(PY) tools/build_mmdet3d.py
	touch $@

mmdet3d: $(VENV)/.mmdet3d

# The integration tests (skipped by `make test` where the extra is missing), and the dependency check with it
test-mmdet3d: mmdet3d
	$(PY) -c "import bev_ddp.integrations.mmdet3d"
	$(PY) -m pytest tests/integrations tests/test_dependencies.py -ra --durations=10; rc=$$?; \
	if [ $$rc -eq 5 ]; then echo "make test-mmdet3d: pytest collected no tests" >&2; exit 1; fi; exit $$rc

# Shake out flakes: the multi-process and signal tests FLAKE_RUNS times in a row (slow tests included).
# Each failing run's output is kept in work_dirs/flake_check/run_<N>.log; exit 1 unless every run passed.
FLAKE_RUNS ?= 20
FLAKE_TESTS ?= tests/engine/test_engine_torchrun.py tests/engine/test_engine_distributed.py tests/test_comm.py \
	tests/bench/test_gpu_check.py tests/faults/test_signals.py
flake-check: install
	@mkdir -p work_dirs/flake_check; passed=0; \
	for i in $$(seq $(FLAKE_RUNS)); do \
	  log=work_dirs/flake_check/run_$$i.log; \
	  if $(PY) -m pytest $(FLAKE_TESTS) -q > $$log 2>&1; then passed=$$((passed + 1)); rm -f $$log; \
	  else echo "flake-check: run $$i failed, see $$log" >&2; fi; \
	  echo "flake-check: run $$i: $$passed passed so far"; \
	done; \
	echo "flake-check: $$passed of $(FLAKE_RUNS) runs passed"; [ $$passed -eq $(FLAKE_RUNS) ]

bench: install
	$(VENV)/bin/bev-ddp bench all

# The GPU proof in one command (ops/README.md, "GPU check"): builds the extensions for the visible GPU,
# runs the CUDA tests, both benches on CUDA, AMP training, sync-free sampling and (with two GPUs) an
# nccl job; summary in $$OUT or work_dirs/gpu_check/. Uses the python that holds torch (no venv: a
# GPU machine may have no network).  CI runs the same script with --device cpu --tiny (tests/bench).
GPU_CHECK_ARGS ?=
gpu-check:
	PYTHONPATH=$(CURDIR) $(PYTHON) -m bev_ddp.cli bench gpu-check --device cuda $(GPU_CHECK_ARGS)

clean:
	rm -rf build $(VENV) *.egg-info bev_ddp/*.so
