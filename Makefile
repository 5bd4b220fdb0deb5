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

.PHONY: setup run test test-fast lint bench ui clean smoke table1 figures fig4 fig5 fig6 \
	paper paper-runs paper-page paper-fig4 paper-fig5 paper-fig6 paper-table1 paper-ground-truth results-smoke

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
	  case $$ds in ml1m) data="$(t1_data_ml1m)";; douban_book) data="$(t1_data_douban_book)";; *) data=;; esac; \
	  if [ ! -d "$(DATA_ROOT)/$$dir" ]; then \
	    echo "table1: skipping $$ds: $(DATA_ROOT)/$$dir not found (python scripts/download_data.py $$ds --dest $(DATA_ROOT)/$$dir)"; \
	    continue; fi; \
	  for p in $(PROTOCOLS); do \
	    run="+experiment=table1 env=$$ds env.data_dir=$(DATA_ROOT)/$$dir env.candidates=$$p $$data"; \
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

# ---- The paper, measured (docs/results.md) ----
# Every preset at the paper's scale, 5 seeds packed into one process per job, every finished run
# a row of the committed ledger LEDGER; a run whose config is in the ledger is skipped, so the
# study runs in pieces (each about 2 h or less on 2 cores, README "The paper, measured"), across
# machines and sessions. Each piece's wall time goes to PIECES (not when every run of it was
# already in the ledger: a rerun keeps the real times). The page is drawn from the
# ledger alone.
LEDGER ?= docs/results/runs.csv
PIECES ?= docs/results/pieces.csv
paper_sweep = $(SWEEP) trainer.parallel_seeds=$(1) tracking.ledger=$(LEDGER)
PAPER_SWEEP = $(call paper_sweep,5)
COST = $(BIN)/python scripts/cost_budget.py --ledger $(LEDGER)
# Times a piece's recipe and records it: $(call piece,<name>,<commands>).
piece = @start=$$(date +%s); status=0; $(2) \
	$(BIN)/python scripts/paper.py piece --pieces $(PIECES) --ledger $(LEDGER) --started $$start --name $(1) --seconds $$(( $$(date +%s) - start )) --status $$status; \
	exit $$status
FIG4_ALGOS := ddpg sac td3
# BookCrossing joins once its full data is under DATA_ROOT (../shared/data holds format samples only).
PAPER_DATASETS ?= ml100k ml1m douban_book
# Table I's parts, each one piece per dataset and protocol (the algos x modes of its sweep).
T1_PARTS := ac ctrl tpgr pgpr1 pgpr2 ref ref-pgpr
T1_ac := algo=ddpg,sac,td3 mode=baseline,expert,joint
T1_ctrl := algo=ddpg,sac,td3 mode=ctrl
T1_tpgr := algo=tpgr
T1_pgpr1 := algo=pgpr mode=baseline,expert
T1_pgpr2 := algo=pgpr mode=joint,ctrl
T1_ALGOS := ddpg sac td3 tpgr pgpr

# Every piece (a failed one does not stop the others), then the page from whatever the ledger holds.
paper:
	@status=0; $(MAKE) -k paper-runs || status=1; $(MAKE) paper-page || status=1; exit $$status

paper-runs: paper-fig4 paper-fig5 paper-fig6 paper-table1 paper-ground-truth

paper-page: setup
	$(BIN)/python scripts/paper.py page --ledger $(LEDGER) --pieces $(PIECES) --out docs/results.md --figures docs/figures

# Fig. 4, one piece per algo: its five modes, its -J under Eq. 9's replay, then its baseline at
# the mean env steps of its own MACS runs.
paper-fig4: $(addprefix paper-fig4-,$(FIG4_ALGOS))

paper-fig4-%: setup
	$(call piece,fig4-$*,$(PAPER_SWEEP) +experiment=fig4 algo=$* $(ARGS) || status=1; \
	$(PAPER_SWEEP) +experiment=fig4 algo=$* mode=joint macs.replay=eq9 $(ARGS) || status=1; \
	cost=$$($(COST) --experiment fig4 --algo $*) && \
	$(PAPER_SWEEP) +experiment=fig4 algo=$* mode=baseline trainer.budget=env_steps trainer.total_steps=$$cost $(ARGS) || status=1;)

paper-fig5: setup
	$(call piece,fig5,$(PAPER_SWEEP) +experiment=fig5_hidden $(ARGS) || status=1;)

paper-fig6: setup
	$(call piece,fig6,$(PAPER_SWEEP) +experiment=fig6_threshold $(ARGS) || status=1;)

# The ground-truth study of docs/macs.md on both envs that know their trivial components.
paper-ground-truth: setup
	$(call piece,ground-truth,$(BIN)/python scripts/ground_truth.py --env synthetic --ledger $(LEDGER) || status=1; \
	$(BIN)/python scripts/ground_truth.py --env session --ledger $(LEDGER) || status=1;)

# Table I: paper-table1-<dataset>-<protocol>-<part> for each dataset found under DATA_ROOT, each
# protocol of PROTOCOLS and each part of T1_PARTS; the last parts, ref and ref-pgpr, run the
# reference policies and each algo's baseline at the mean env steps of its MACS runs there.
define table1_piece
paper-table1-$(1)-$(2)-$(3): setup
	$$(call piece,table1-$(1)-$(2)-$(3),$$(if $$(wildcard $$(DATA_ROOT)/$(4)),$$(call t1_$(if $(filter ref%,$(3)),$(3),run),$(1),$(2),$(3),$(4)),echo "skipping: $$(DATA_ROOT)/$(4) not found (python scripts/download_data.py $(1) --dest $$(DATA_ROOT)/$(4))";))
endef
t1_args = $(strip +experiment=table1 env=$(1) env.data_dir=$(DATA_ROOT)/$(4) env.candidates=$(2) \
	$(t1_data_$(1)) $(t1_eval_$(1)))
# Where the original ratings file is missing (as in ../shared/data, DATASETS.md), every row of the
# dataset reads the table that is there instead: ML-1M's rebuilt table by MovieID, so that PGPR's
# knowledge graph matches movies.dat (its 35 ratings of uncertain movies dropped), and Douban-Book's
# MetaHIN subset. Each dataset's rows all read the same data either way.
t1_data_ml1m = $(if $(wildcard $(DATA_ROOT)/ml-1m/ratings.dat*),,env.format=table \
	env.table.item_col=movie_id data.on_bad_rows=skip kg.schema=ml1m)
t1_data_douban_book = $(if $(wildcard $(DATA_ROOT)/douban-book/user_book.dat*),,env.format=table \
	kg.schema=douban_book)
t1_run = $(PAPER_SWEEP) $(t1_args) $(T1_$(3)) $(ARGS) || status=1;
t1_ref = $(PAPER_SWEEP) $(t1_args) algo=random,popular mode=baseline $(ARGS) || status=1; \
	$(call t1_matched,$(1),$(2),$(3),$(4),$(filter-out pgpr,$(T1_ALGOS)),5)
# PGPR's seeds share no batched update (docs/seed_parallel.md), so its cost-matched baseline, a
# piece of its own, runs as two jobs of 3 and 2 seeds to keep both cores busy.
t1_ref-pgpr = $(call t1_matched,$(1),$(2),$(3),$(4),pgpr,3)
# $(call t1_matched,<ds>,<protocol>,<part>,<dir>,<algos>,<seeds per job>): each algo's baseline
# at the mean env steps of its MACS runs, each evaluated once, after training, on every dataset:
# only that final number enters Table I, and PGPR's 3x longer runs would otherwise evaluate 37 times.
t1_matched = for algo in $(5); do \
	  cost=$$($(COST) --experiment table1 --algo $$algo --env $(1) --protocol $(2) --data-dir $(4)) && \
	  $(call paper_sweep,$(6)) $(t1_args) algo=$$algo mode=baseline trainer.budget=env_steps \
	    trainer.total_steps=$$cost $(if $(t1_eval_$(1)),,$(t1_once)) $(ARGS) || status=1; \
	done;
# On the two large datasets every row evaluates once, after training, where ML-100k's evaluate every
# 2,500 user-steps: Table I reports the final evaluation, which is the same either way (evaluating
# never changes training), and one PGPR evaluation of every test user there takes 7 (ML-1M) and 13
# min (Douban-Book). The -E expert is still picked by evaluations every 2,500 user-steps, as on ML-100k.
t1_once = 'trainer.eval_every=$${trainer.total_steps}' trainer.eval_at_start=false
t1_eval_ml1m = $(t1_once) expert.eval_every=2500
t1_eval_douban_book = $(t1_once) expert.eval_every=2500
dataset_dir = $(or $(filter-out ml100k ml1m douban_book,$(1)),$(if $(filter ml100k,$(1)),ml-100k,$(if $(filter ml1m,$(1)),ml-1m,douban-book)))
$(foreach ds,$(PAPER_DATASETS),$(foreach p,$(PROTOCOLS),$(foreach part,$(T1_PARTS),\
	$(eval $(call table1_piece,$(ds),$(p),$(part),$(call dataset_dir,$(ds)))))))
$(foreach ds,$(PAPER_DATASETS),$(eval paper-table1-$(ds): $(foreach p,$(PROTOCOLS),$(foreach part,$(T1_PARTS),paper-table1-$(ds)-$(p)-$(part)))))
paper-table1: $(addprefix paper-table1-,$(PAPER_DATASETS))

# The regression guard of the paper pipeline: one cell of each figure and table at a tiny budget,
# into a throwaway ledger, then the page from it (tests/test_results_smoke.py runs it in the slow tier).
results-smoke: setup
	$(BIN)/python -m pytest -q tests/test_results_smoke.py

clean:
	rm -rf $(VENV) .pytest_cache .ruff_cache
