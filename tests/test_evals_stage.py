"""`rlhf-trust eval`: one DVC matrix cell end to end on a tiny model, and bad input -> one line, exit 2."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from train_support import base_texts

from rlhf_trust import cli, fileio, runinfo
from rlhf_trust.evals.stage import read_units

PARAMS = """
train:
  seeds: [0, 1]
eval:
  models: [base, sft]
  data_dir: {data}
  out_dir: eval
  batch_size: 4
  threads: 1
  cache: cache/gen.sqlite
  bootstrap_samples: 200
  verticals:
    toxicity: {{limit: 1, samples: 2, max_new_tokens: 4}}
    bias: {{limit: 2, samples: 1, max_new_tokens: 4}}
    ethics: {{limit: 3, max_new_tokens: 4}}
    truthfulness: {{limit: 2, max_new_tokens: 4}}
    privacy: {{limit: 1, pii_types: [ssn], enron_shots: [one_shot], max_new_tokens: 4}}
"""


@pytest.fixture(scope="module")
def project(tmp_path_factory, raw_data):
    from rlhf_trust.models import build_tiny_base

    root = tmp_path_factory.mktemp("proj")
    build_tiny_base(root / "outputs" / "models" / "base", base_texts())
    for k in (0, 1):   # a trained model per training seed: outputs/models/sft/s<k>
        build_tiny_base(root / "outputs" / "models" / "sft" / f"s{k}", base_texts(), seed=1 + k)
    (root / "params.yaml").write_text(PARAMS.format(data=raw_data))
    return root


def run_cli(*argv) -> int:
    return cli.main(["eval", *argv])


@pytest.mark.slow
def test_every_vertical_end_to_end_then_cached(project, monkeypatch, capsys):
    monkeypatch.chdir(project)
    for vertical in ("toxicity", "bias", "ethics", "truthfulness", "privacy"):
        assert run_cli("--vertical", vertical, "--model", "base") == 0
        m = runinfo.read(project / "eval" / vertical / "base" / "metrics.json")
        rows = fileio.read_jsonl(project / "eval" / vertical / "base" / "samples.jsonl.gz")
        assert m["model_calls"] > 0 and m["n_samples"] == len(rows) > 0
        assert m[m["headline"]] is not None and m["mlflow_run_id"]
        assert "refusal_rate" in m and "parse_failure_rate" in m and f"{m['headline']}_ci95" in m
        assert all(r["model"] == "base" and r["vertical"] == vertical for r in rows)
        units = read_units(project / "eval" / vertical / "base" / "units.csv")
        assert len(units) == m[f"{m['headline']}_n"]
        assert sum(v for _, v in units) / len(units) == pytest.approx(m[m["headline"]])
    # re-run with nothing changed: zero model calls, same numbers
    before = runinfo.read(project / "eval" / "ethics" / "base" / "metrics.json")
    assert run_cli("--vertical", "ethics", "--model", "base") == 0
    after = runinfo.read(project / "eval" / "ethics" / "base" / "metrics.json")
    assert after["model_calls"] == 0 and after["cache_hits"] == before["model_calls"]
    assert after["false_positive_rate"] == before["false_positive_rate"]
    assert "ethics@base" in capsys.readouterr().out

    import mlflow

    runs = mlflow.search_runs(search_all_experiments=True, filter_string="tags.stage = 'eval_ethics' and tags.model = 'base'")
    assert len(runs) >= 2 and all(n.startswith("eval_ethics@base p") for n in runs["tags.mlflow.runName"])
    client = mlflow.tracking.MlflowClient()
    run_id = runs.iloc[0]["run_id"]
    assert {"samples.jsonl.gz", "samples_table.json"} <= {a.path for a in client.list_artifacts(run_id)}
    table = json.loads(Path(client.download_artifacts(run_id, "samples_table.json")).read_text())
    assert table["columns"][:2] == ["unit", "score"] and len(table["data"]) == after[f"{after['headline']}_n"]
    # even a fully cached (sub-second) run records its host's load: a sample at its start and end
    cpu = client.get_metric_history(run_id, "system/cpu_utilization_percentage")
    assert sorted(m.step for m in cpu) == [0, 1]


@pytest.mark.slow
def test_one_process_evaluates_every_model_and_a_cached_rerun_loads_none(project, monkeypatch):
    """`rlhf-trust eval --vertical V` (the DVC stage) runs every model in eval.models; re-run with
    nothing changed, it answers from the cache without importing torch or loading a model."""
    import subprocess
    import sys

    monkeypatch.chdir(project)
    assert run_cli("--vertical", "privacy") == 0
    cells = ("base", "sft/s0", "sft/s1")   # the base once, the trained model once per seed
    assert not (project / "eval/privacy/sft/metrics.json").exists()
    first = {m: runinfo.read(project / "eval" / "privacy" / m / "metrics.json") for m in cells}
    for m in cells[1:]:
        assert first[m]["model_calls"] > 0 and first[m]["model_loaded"]  # (base may be cached already)
        assert read_units(project / "eval/privacy/base/units.csv")[0][0] == read_units(
            project / f"eval/privacy/{m}/units.csv")[0][0]
    code = ("import sys; from rlhf_trust import cli; rc = cli.main(['eval', '--vertical', 'privacy']); "
            "print('TORCH', 'torch' in sys.modules, rc)")
    out = subprocess.run([sys.executable, "-c", code], cwd=project, capture_output=True, text=True, timeout=120, check=False)
    assert "TORCH False 0" in out.stdout, out.stderr[-2000:]
    for m in cells:
        again = runinfo.read(project / "eval" / "privacy" / m / "metrics.json")
        assert again["model_calls"] == 0 and again["model_loaded"] is False
        assert again["leakage_rate"] == first[m]["leakage_rate"]


@pytest.mark.parametrize("argv, message", [
    (["--vertical", "honesty", "--model", "base"], "unknown vertical 'honesty'"),
    (["--vertical", "ethics", "--model", "rlhf"], "unknown model 'rlhf'"),
    (["--vertical", "ethics", "--model", "ppo"], "model directory not found"),
    (["--vertical", "ethics", "--model", "base", "--limit", "0"], "--limit must be >= 1"),
])
def test_bad_arguments_are_one_line(project, monkeypatch, capsys, argv, message):
    monkeypatch.chdir(project)
    assert run_cli(*argv) == 2
    err = capsys.readouterr().err.strip()
    assert message in err and "\n" not in err and "Traceback" not in err


@pytest.mark.parametrize("params, message", [
    ("eval:\n  verticals:\n    honesty: {limit: 2}\n", "eval.verticals.honesty: unknown vertical"),
    ("eval:\n  verticals:\n    toxicity: {samples: zero}\n", "eval.verticals.toxicity.samples: must be an integer"),
    ("eval:\n  verticals:\n    ethics: {prompts: [evil]}\n", "eval.verticals.ethics.prompts: unknown ['evil']"),
    ("eval:\n  verticals:\n    bias: [1, 2]\n", "eval.verticals.bias: must be a mapping"),
    ("eval:\n  batch_size: 0\n", "eval.batch_size: must be >= 1"),
    ("eval:\n  data_dir: nowhere\n", "eval.data_dir not found: nowhere"),
])
def test_malformed_params_are_one_line(tmp_path, monkeypatch, capsys, params, message):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "params.yaml").write_text(params)
    assert run_cli("--vertical", "ethics", "--model", "base") == 2
    err = capsys.readouterr().err.strip()
    assert message in err and "\n" not in err


def test_missing_data_file_is_one_line(tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "prepared").mkdir()
    (tmp_path / "params.yaml").write_text("eval:\n  data_dir: prepared\n")
    assert run_cli("--vertical", "truthfulness", "--model", "base") == 2
    err = capsys.readouterr().err.strip()
    assert "truthfulqa/truth_mc.json" in err and "\n" not in err


def test_a_vertical_may_set_its_own_batch_size():
    """`batch_size` in a vertical's entry is the engine's, not the protocol's: the stage batches that
    vertical with it, and a bad value is one ConfigError line naming the key."""
    from types import SimpleNamespace

    from rlhf_trust import evals
    from rlhf_trust.errors import ConfigError
    from rlhf_trust.evals import stage

    cfg = SimpleNamespace(batch_size=16, verticals={"toxicity": {"limit": 2, "batch_size": 64}, "privacy": {}})
    assert stage.batch_size(cfg, "toxicity") == 64 and stage.batch_size(cfg, "privacy") == 16
    assert evals.settings("toxicity", {"limit": 2, "batch_size": 64}).limit == 2
    with pytest.raises(ConfigError, match=r"eval.verticals.toxicity.batch_size"):
        evals.settings("toxicity", {"batch_size": 0})
