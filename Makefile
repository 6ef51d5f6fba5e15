# Two commands do all the set-up: `make train` (the default main job) and `make test` (the suite).
PY ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
export MUJOCO_GL ?= egl
export PYOPENGL_PLATFORM ?= egl

.PHONY: venv train test bench clean sysdeps

$(BIN)/.installed: setup.cfg constraints.txt
	@$(MAKE) --no-print-directory sysdeps
	test -x $(BIN)/python || $(PY) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip
	$(BIN)/pip install -q -c constraints.txt -e '.[test,minari]'
	touch $@

venv: $(BIN)/.installed

# EGL for MuJoCo / dm_control pixel rendering (root on the machines this runs on; skipped if present).
sysdeps:
	@if ! ldconfig -p 2>/dev/null | grep -q libEGL.so.1; then \
	  if [ "$$(id -u)" = 0 ]; then (apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq libegl1 libgl1 >/dev/null) || echo "warning: could not install libegl1/libgl1; pixel rendering tests will be skipped"; \
	  else echo "warning: libEGL missing; run: sudo apt-get install libegl1 libgl1"; fi; fi

# The default main job: PETS with a learned terminal value on InvertedPendulum-v5 (model-based MPC; it
# balances for the 1000-step maximum from its 3rd planned episode, a few minutes on 2 CPU cores).
# `make train ARGS="..."` runs `python -m mbrl.train ...` with those arguments instead.
MAIN_JOB := env=gym/InvertedPendulum-v5 model=ensemble algo=pets algo.terminal_value=true algo.discount=0.99 \
	algo.horizon=8 algo.particles=10 planner.population=200 algo.fit.min_updates=1000 \
	algo.prefill=100 model.hidden=128 model.layers=3 steps=2500 threads=1

train: venv
	$(BIN)/python -m mbrl.train $(if $(ARGS),$(ARGS),$(MAIN_JOB))

# two pytest workers (pytest-xdist): most tests run torch on one thread, so one process leaves a core idle
TEST_WORKERS ?= 2
test: venv
	$(BIN)/python -m pytest -q -x --timeout=900 -n $(TEST_WORKERS) --dist worksteal tests $(ARGS)

bench: venv
	$(BIN)/python -m mbrl.bench $(ARGS)

clean:
	rm -rf $(VENV) runs outputs multirun
