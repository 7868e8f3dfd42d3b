# rlhf-trust: `make setup && make test`, then `make repro` (the default offline CPU run).
VENV    ?= .venv
PYTHON  ?= python3
BIN     := $(abspath $(VENV))/bin
export PATH := $(BIN):$(PATH)
# Offline and no telemetry by default; set HF_HUB_OFFLINE=0 for hub models/data.
export HF_HUB_OFFLINE ?= 1
export HF_DATASETS_OFFLINE ?= $(HF_HUB_OFFLINE)
export TRANSFORMERS_OFFLINE ?= $(HF_HUB_OFFLINE)
export MLFLOW_DISABLE_TELEMETRY := true
export DO_NOT_TRACK := 1
export DVC_NO_ANALYTICS := 1
export GX_ANALYTICS_ENABLED := false
export HF_HUB_DISABLE_TELEMETRY := 1
export TOKENIZERS_PARALLELISM := false
export TRL_EXPERIMENTAL_SILENCE := 1
UI_PORT ?= 5000
# Values a user passes (`make compare A=...`) reach recipes through the environment, quoted as "$$A": never
# pasted into the shell line, where a `;` or backtick in a revision name would run as a command.
export UI_PORT

.PHONY: setup test test-team team-up team-down data repro smoke report ui lint paper-params bench doctor clean-outputs compare check-trust curate-demo
.PHONY: help

setup: $(VENV)/.installed   ## create .venv and install the pinned stack + this package

$(VENV)/.installed: requirements.txt requirements-nodeps.txt pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --upgrade pip
	$(BIN)/pip install --progress-bar on -r requirements.txt
	$(BIN)/pip install --no-deps -r requirements-nodeps.txt
	$(BIN)/pip install --no-deps -e .
	touch $@

test: setup                 ## the test suite (tiny models, committed data fixtures; RLHF_TRUST_DATA_MIRROR=<dir> adds the full-data tests)
	$(BIN)/pytest

data: setup                 ## fill data/ from the source in params.yaml and check it against data.dvc
	$(BIN)/rlhf-trust data

repro: data                 ## the whole pipeline (dvc repro), with "stage k/N, elapsed" per stage, after a params check
	$(BIN)/rlhf-trust params
	$(BIN)/python -m rlhf_trust.progress -- $(BIN)/dvc repro

# The whole DAG on a random tiny model (params/smoke.yaml) in a throw-away git worktree, so the
# workspace's dvc.lock / metrics / eval / influence / reports stay as committed. The worktree gets
# the working tree's uncommitted changes too; MLflow runs land in the main store (rlhf_trust.tracking
# anchors the store at the main checkout, or $$MLFLOW_TRACKING_URI). One fork server imports torch,
# transformers, MLflow and GX once for every stage process (src/rlhf_trust/preload.py).
SMOKE_DIR ?= .smoke
export SMOKE_DIR
smoke: data                 ## few-minute check that every stage runs and is tracked (numbers are not results)
	@git worktree remove --force -- "$$SMOKE_DIR" 2>/dev/null || rm -rf -- "$$SMOKE_DIR"; git worktree prune
	@git worktree add -q --detach -- "$$SMOKE_DIR" HEAD
	@git ls-files -z -m -o --exclude-standard | tar --null --ignore-failed-read -T - -cf - 2>/dev/null | tar -xf - -C "$$SMOKE_DIR"
	@cp params/smoke.yaml "$$SMOKE_DIR/params.yaml" && git -C "$$SMOKE_DIR" update-index --skip-worktree params.yaml
	@cp -r data "$$SMOKE_DIR/data"
	cd "$$SMOKE_DIR" && $(BIN)/rlhf-trust params
	cd "$$SMOKE_DIR" && RLHF_TRUST_PROFILE=smoke $(BIN)/python -m rlhf_trust.preload -- $(BIN)/dvc repro
	@echo "smoke: report in $$SMOKE_DIR/reports/trust_summary.md (smoke run: numbers are not results)"

# Writes to outputs/report/ (untracked) and says so; WRITE=1 updates the committed reports/ (as the DVC stage does).
WRITE ?=
report: setup               ## the report from whatever results exist (partial runs too), in outputs/report/
	$(BIN)/rlhf-trust report $(if $(WRITE),--write)

# Two runs side by side with paired statistics (outputs/compare/compare.{md,html,json}; WRITE=1: reports/).
# A and B: a git revision, a DVC experiment name, an MLflow pipeline run id, or `workspace`.
A ?= HEAD
B ?= workspace
export A B
compare: setup              ## B - A per vertical and model: paired CI, Holm p, MDE, data versions, params diff
	$(BIN)/rlhf-trust compare $(if $(WRITE),--write) -- "$$A" "$$B"

# Acting on attributions (README): retrain on the default run's data minus the top-k pairs
# most harmful to one vertical (by one stage's influence), re-evaluate, and compare with the default run.
# A second full pipeline run (~50 min) in the workspace: curate reads the default run's influence scores
# (DVC outputs, not in git) and reports/trust_summary.json there. Afterwards the workspace holds the
# curated run (also saved as the experiment); `dvc exp apply` / git restore + dvc checkout go back.
CURATE_VERTICAL ?= privacy
CURATE_STAGE ?= dpo
CURATE_K ?= 12
# = dpo.max_train_pairs: only pairs the stage trains on are candidates
CURATE_WITHIN ?= 80
export CURATE_VERTICAL CURATE_STAGE CURATE_K CURATE_WITHIN
curate-demo: data           ## curated run vs the default one: dvc exp curated-<vertical>, then outputs/compare/compare.md
	$(BIN)/dvc exp run -n "curated-$$CURATE_VERTICAL" -S curate.enabled=true \
	  -S "curate.stages=[$$CURATE_STAGE]" -S "curate.verticals=[$$CURATE_VERTICAL]" \
	  -S "curate.top_k=$$CURATE_K" -S "curate.within_first=$$CURATE_WITHIN"
	$(BIN)/rlhf-trust compare -- HEAD "curated-$$CURATE_VERTICAL"

# The regression gate (a CI step, README): exit 1 when any vertical is significantly worse than BASELINE.
BASELINE ?= HEAD
export BASELINE
check-trust: setup          ## fail if the workspace's results are significantly less trustworthy than BASELINE (writes outputs/compare/)
	$(BIN)/rlhf-trust compare --fail-on-regression -- "$$BASELINE" workspace

# Team mode (README): the same three servers a team runs, on 127.0.0.1 only, state in $(TEAM_DIR)/.
TEAM_DIR ?= .team
export TEAM_DIR
test-team: setup            ## only the team-mode integration test (real PostgreSQL + S3 + MLflow server; minutes)
	$(BIN)/pytest -m team tests/test_team.py

team-up: setup              ## start PostgreSQL, SeaweedFS (S3) and an MLflow server on them; prints what to export
	$(BIN)/python -m rlhf_trust.team up --state "$$TEAM_DIR"

team-down:                  ## stop what team-up started (data stays in $(TEAM_DIR)/)
	$(BIN)/python -m rlhf_trust.team down --state "$$TEAM_DIR"

ui: setup                   ## MLflow UI on http://127.0.0.1:$(UI_PORT)
	$(BIN)/mlflow ui --host 127.0.0.1 --port "$$UI_PORT" --backend-store-uri sqlite:///$(CURDIR)/mlflow.db --default-artifact-root $(CURDIR)/mlruns

# The kept benchmarks (benchmarks/README.md): each with --quick, a minute or two on tiny-gpt-neox or a small
# slice, results in benchmarks/results/quick/. `make bench BENCH_ARGS=` runs them at full size (hours; the
# ones that read a finished run's models need `make repro` first).
BENCHMARKS := eval_units_per_s train_steps heldout_precision ppo_seeds attribution_lds influence scorer_validity \
              eval_tradeoff pooled_stats_sim verdict_calibration_probe
BENCH_ARGS ?= --quick
bench: setup                ## the kept benchmarks (--quick by default; BENCH_ARGS= for full size)
	@set -e; for b in $(BENCHMARKS); do echo "== $$b"; $(BIN)/python benchmarks/$$b.py $(BENCH_ARGS); done

lint: setup                 ## ruff on src, tests and benchmarks
	$(BIN)/ruff check src tests benchmarks

paper-params:               ## switch params.yaml to the study's scale (git checkout params.yaml to undo)
	cp params/paper.yaml params.yaml

doctor: setup               ## versions of the pinned stack
	@$(BIN)/python -c "import importlib.metadata as m; [print(f'{p:20s}', m.version(p)) for p in ('torch','transformers','trl','peft','datasets','accelerate','mlflow','dvc','great-expectations')]"

help:                       ## list the targets
	@grep -E '^[a-zA-Z_-]+:.*## ' $(MAKEFILE_LIST) | sed -E 's/^([a-zA-Z_-]+):.*## (.*)/\1\t\2/' | \
	  awk -F'\t' '{printf "  %-14s %s\n", $$1, $$2}'
