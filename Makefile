# Everything runs inside .venv; `make run` or `make test` alone sets it up on a fresh clone.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed-$(shell cat pyproject.toml | cksum | cut -d' ' -f1)
# The CPU build of torch; a looser pin would pull a multi-GB CUDA build.
TORCH_PIN ?= torch==2.13.0

# Sweeps run N_JOBS jobs at a time on this machine (one per core of the 2-core reference machine).
N_JOBS ?= 2
SWEEP = $(BIN)/python -m macs_exp -m hydra/launcher=joblib hydra.launcher.n_jobs=$(N_JOBS)
# Table I reads each dataset from DATA_ROOT/<folder> (scripts/download_data.py NAME --dest DIR).
DATA_ROOT ?= data
TABLE1_DATASETS ?= ml100k ml1m bookcrossing douban_book
# The offline protocols (env.candidates) Table I runs every dataset under; each is its own column.
PROTOCOLS ?= catalog rated

.PHONY: setup run test test-fast lint bench ui clean smoke table1 figures fig4 fig5 fig6

setup: $(STAMP)

$(STAMP): pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet "$(TORCH_PIN)"
	$(BIN)/python -m pip install --quiet -e ".[dev]"
	rm -f $(VENV)/.installed-*
	touch $@

run: setup
	$(BIN)/python -m macs_exp $(ARGS)

# The tests run in TEST_JOBS processes (pytest-xdist; 2 = the reference machine's cores, "auto" =
# one per core, 0 = in this process, for pdb). Each test file stays in one process, so that its
# module fixtures are built once. Caches under outputs/ are shared safely (locks, atomic writes).
TEST_JOBS ?= 2
PYTEST = $(BIN)/python -m pytest -q -n $(TEST_JOBS) --dist loadfile

test: setup
	$(PYTEST) $(PYTEST_ARGS)

# Everything but the tests marked slow (pyproject.toml): under 3 minutes on the 2-core machine.
# The -m replaces pyproject's `-m 'not data'`, hence `not data` again.
test-fast: setup
	$(PYTEST) -m "not slow and not data" $(PYTEST_ARGS)

lint: setup
	$(BIN)/ruff check src tests scripts
	$(BIN)/ruff format --check src tests scripts
	$(BIN)/mypy

bench: setup
	$(BIN)/python scripts/bench_throughput.py

# MLflow 3.17's UI opens experiments in its GenAI view until its sidebar switch says Model training.
ui: setup
	mkdir -p outputs
	@echo "In the UI's sidebar, switch GenAI -> Model training once to see the runs (README, Comparing runs in the UI)"
	$(BIN)/mlflow ui --backend-store-uri sqlite:///$(CURDIR)/outputs/mlflow.db --port $(or $(PORT),5000)

# Every algo x mode on VirtualTaobao and the bundled tiny dataset at a tiny budget, then the table
# and curves of that sweep (a few minutes; see conf/experiment/smoke.yaml).
smoke: setup
	$(SWEEP) +experiment=smoke $(ARGS)
	$(BIN)/python scripts/table1.py --experiment smoke
	$(BIN)/python scripts/plot_curves.py --experiment smoke --figure fig4

# Table I: per dataset found under DATA_ROOT and per protocol of PROTOCOLS, the learning algos x
# baseline/-E/-J x 5 seeds, the reference policies and baselines at the mean MACS simulator cost of
# that dataset and protocol; then the table from every finished run (a failed job shows as a hole,
# and makes the target fail after the table is written).
table1: setup
	@status=0; for ds in $(TABLE1_DATASETS); do \
	  case $$ds in ml100k) dir=ml-100k;; ml1m) dir=ml-1m;; douban_book) dir=douban-book;; *) dir=$$ds;; esac; \
	  if [ ! -d "$(DATA_ROOT)/$$dir" ]; then \
	    echo "table1: skipping $$ds: $(DATA_ROOT)/$$dir not found (python scripts/download_data.py $$ds --dest $(DATA_ROOT)/$$dir)"; \
	    continue; fi; \
	  for p in $(PROTOCOLS); do \
	    run="+experiment=table1 env=$$ds env.data_dir=$(DATA_ROOT)/$$dir env.candidates=$$p"; \
	    $(SWEEP) $$run $(ARGS) || status=1; \
	    $(SWEEP) $$run algo=random,popular mode=baseline $(ARGS) || status=1; \
	    cost=$$($(BIN)/python scripts/cost_budget.py --experiment table1 --env $$ds --protocol $$p --data-dir $(DATA_ROOT)/$$dir) && \
	    $(SWEEP) $$run mode=baseline trainer.budget=env_steps trainer.total_steps=$$cost $(ARGS) || status=1; \
	  done; \
	done; \
	$(BIN)/python scripts/table1.py --experiment table1 && exit $$status

# Figs. 4-6 on VirtualTaobao: each sweep, then its figure (drawn from the finished runs even if a
# job failed; the target still fails then).
figures: fig4 fig5 fig6

# Fig. 4: the main sweep, its -J rows under Eq. 9's replay, then baselines at the MACS runs' mean
# simulator cost (trainer.budget=env_steps); the curves against user-steps and env steps, and the table.
fig4: setup
	@status=0; $(SWEEP) +experiment=fig4 $(ARGS) || status=1; \
	$(SWEEP) +experiment=fig4 mode=joint macs.replay=eq9 $(ARGS) || status=1; \
	cost=$$($(BIN)/python scripts/cost_budget.py --experiment fig4) && \
	$(SWEEP) +experiment=fig4 mode=baseline trainer.budget=env_steps trainer.total_steps=$$cost $(ARGS) || status=1; \
	$(BIN)/python scripts/plot_curves.py --experiment fig4 --figure fig4 || status=1; \
	$(BIN)/python scripts/plot_curves.py --experiment fig4 --figure fig4 --x env_steps || status=1; \
	$(BIN)/python scripts/table1.py --experiment fig4 --out-dir outputs/tables/fig4 || status=1; \
	exit $$status

fig5: setup
	@status=0; $(SWEEP) +experiment=fig5_hidden $(ARGS) || status=1; \
	$(BIN)/python scripts/plot_curves.py --experiment fig5_hidden --figure fig5 && exit $$status

fig6: setup
	@status=0; $(SWEEP) +experiment=fig6_threshold $(ARGS) || status=1; \
	$(BIN)/python scripts/plot_curves.py --experiment fig6_threshold --figure fig6 && exit $$status

clean:
	rm -rf $(VENV) .pytest_cache .ruff_cache
