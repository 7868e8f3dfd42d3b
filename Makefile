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

.PHONY: setup test data repro report ui lint paper-params bench doctor clean-outputs

setup: $(VENV)/.installed   ## create .venv and install the pinned stack + this package

$(VENV)/.installed: requirements.txt pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip
	$(BIN)/pip install -q -r requirements.txt
	$(BIN)/pip install -q --no-deps -e .
	touch $@

test: setup                 ## the test suite (tiny models, real data samples; a few minutes)
	$(BIN)/pytest

data: setup                 ## fill data/ from the source in params.yaml and check it against data.dvc
	$(BIN)/rlhf-trust data

repro: data                 ## the whole pipeline (dvc repro)
	$(BIN)/dvc repro

report: setup               ## reports/trust_summary.{md,html} from whatever results exist (partial runs too)
	$(BIN)/rlhf-trust report

ui: setup                   ## MLflow UI on http://127.0.0.1:$(UI_PORT)
	$(BIN)/mlflow ui --host 127.0.0.1 --port $(UI_PORT) --backend-store-uri sqlite:///$(CURDIR)/mlflow.db --default-artifact-root $(CURDIR)/mlruns

lint: setup
	$(BIN)/ruff check src tests benchmarks

paper-params:               ## switch params.yaml to the study's scale (git checkout params.yaml to undo)
	cp params/paper.yaml params.yaml

doctor: setup               ## versions of the pinned stack
	@$(BIN)/python -c "import importlib.metadata as m; [print(f'{p:20s}', m.version(p)) for p in ('torch','transformers','trl','peft','datasets','accelerate','mlflow','dvc','great-expectations')]"
