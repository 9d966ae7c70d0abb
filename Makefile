# sketchlab: `make train` installs everything and runs a short training; `make test` runs the tests.
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed

.PHONY: setup train test test-all bench gpu-check ui ui-check clean

# A virtual environment with sketchlab (editable) and its pinned dependencies. torch==2.13.0 is
# pinned so pip takes the CPU wheel on a machine without a GPU instead of a multi-GB CUDA build.
$(STAMP): setup.cfg pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -e '.[dev]'
	@# the fused recurrences' C++ step kernels, built now rather than in the first training (about 30 s)
	$(PY) -c "from sketchlab.models.sketch_rnn.step_kernels import describe; print('step kernels:', describe())"
	touch $(STAMP)

setup: $(STAMP)

# The main job: two short trainings on real data, logged to MLflow (outputs/mlflow.db, experiment "quickstart"):
# Sketch-RNN on the sheep drawings, then SketchODE on VectorMNIST, whose reconstructions are recognisable digits.
train: $(STAMP)
	$(VENV)/bin/sketchlab-train experiment=quickstart
	@root=$$($(PY) -c "from sketchlab.data.paths import default_data_root as r; print(r())"); \
	if [ -f "$$root/vectormnist/vmnist.npz" ]; then $(VENV)/bin/sketchlab-train experiment=quickstart_ode; \
	else echo "VectorMNIST is not under $$root (it has no public download): skipping the SketchODE stage"; fi

# The test suite (what CI runs): everything but the tests marked slow (long trainings, a wheel install, serving
# over HTTP, the browser). GPU tests skip without CUDA. `make test-all` runs the slow ones too.
# Two pytest workers (each test file stays on one, so module fixtures run once): most tests drive training
# subprocesses that use one thread each (trainer.threads=auto), so two keep both cores of a CI machine busy.
TEST_WORKERS ?= 2
test: $(STAMP)
	$(PY) -m pytest -q -n $(TEST_WORKERS) --dist loadfile -m "not slow"

test-all: $(STAMP)
	$(PY) -m pytest -q -n $(TEST_WORKERS) --dist loadfile

bench: $(STAMP)
	$(PY) scripts/bench_sketch_rnn.py
	$(PY) scripts/bench_sketch_ode.py

# On a CUDA machine: the GPU-only tests, then both benchmarks at full size, results as JSON in outputs/bench/.
gpu-check: $(STAMP)
	$(PY) -m pytest -q -m gpu
	mkdir -p outputs/bench
	$(PY) scripts/bench_sketch_rnn.py --device cuda --out outputs/bench/sketch_rnn.json
	$(PY) scripts/bench_sketch_ode.py --device cuda --out outputs/bench/sketch_ode.json

# Browse runs: http://127.0.0.1:5000
# The same store as every sketchlab tool: $MLFLOW_TRACKING_URI, else outputs/mlflow.db. `make ui PORT=5001`.
PORT ?= 5000
ui: $(STAMP)
	$(VENV)/bin/mlflow ui --host 127.0.0.1 --port $(PORT) \
		--backend-store-uri "$${MLFLOW_TRACKING_URI:-sqlite:///$$(realpath -m $${SKETCHLAB_OUTPUTS:-outputs})/mlflow.db}"

# The MLflow UI in headless Chromium (installs nothing: needs Debian's chromium); screenshots in outputs/ui-check/.
ui-check: $(STAMP)
	$(PY) -m pytest -q -m browser -rs

clean:
	rm -rf $(VENV) .pytest_cache
