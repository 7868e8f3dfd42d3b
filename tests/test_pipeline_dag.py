"""dvc.yaml is the one declaration of the pipeline: loaded through DVC (stages resolved from dvc.yaml +
params.yaml), it must agree with what the code knows (rlhf_trust/pipeline.py, the vertical registry)
and keep the DAG's rules: each training stage reads its parent's model, an eval cell reads its own
vertical's data only, influence cells read the samples of the change they explain, no stage reads
benchmarks/, and no vertical is typed in dvc.yaml."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
import yaml

from rlhf_trust import cli, paths, pipeline, verticals

ROOT = Path(__file__).resolve().parents[1]
PARAMS = yaml.safe_load((ROOT / "params.yaml").read_text())


@pytest.fixture(scope="module")
def dag() -> dict[str, dict]:
    from dvc.repo import Repo

    repo = Repo(str(ROOT))
    try:
        return {s.addressing: {"cmd": s.cmd, "deps": {d.def_path for d in s.deps}, "outs": {o.def_path for o in s.outs}}
                for s in repo.index.stages if s.addressing != "data.dvc"}
    finally:
        repo.close()


def names_vertical(path: str, vertical: str) -> bool:
    return vertical in re.split(r"[/.@-]", path)


def test_every_stage_is_one_rlhf_trust_command(dag):
    for name, st in dag.items():
        cmd = st["cmd"].split()
        assert cmd[:1] == ["rlhf-trust"] and cmd[1] in cli.COMMANDS, name
        assert cmd[1] == name.split("@")[0], name


def test_no_stage_reads_benchmarks_and_only_the_data_stages_read_raw_data(dag):
    for name, st in dag.items():
        assert not any(d.split("/")[0] == "benchmarks" for d in st["deps"]), name
        if name not in ("prepare", "validate"):
            assert "data" not in st["deps"] and not any(d.startswith("data/") for d in st["deps"]), name


def test_each_training_stage_and_seed_reads_its_own_seeds_parent_model_and_the_validated_hh_data(dag):
    seeds = PARAMS["train"]["seeds"]
    assert {n for n in dag if n.split("@")[0] in pipeline.TRAINED} == {
        f"{s}@{k}" for s in pipeline.TRAINED for k in seeds}
    for s in pipeline.TRAINED:
        for k in seeds:
            st = dag[f"{s}@{k}"]
            assert st["cmd"] == f"rlhf-trust {s} --seed {k}"
            for m in (pipeline.PARENT[s], *pipeline.USES.get(s, ())):
                assert str(paths.model_dir(m, k)) in st["deps"], f"{s}@{k} does not depend on {m}'s model"
            assert not [d for d in st["deps"] if any(f"/s{j}" in d for j in seeds if j != k)], (s, k)
            assert {str(paths.validated("hh")), f"{paths.CURATED}/hh_train.jsonl"} <= st["deps"], s
            assert {str(paths.model_dir(s, k)), str(paths.stage_metrics(s, k))} <= st["outs"], (s, k)
            assert not any(names_vertical(d, v) for d in st["deps"] for v in verticals.names()), s


def test_adding_a_seed_touches_no_existing_stage():
    """The training stages do not depend on train.seeds itself: a new seed adds stages, it does not
    invalidate the others (the eval stages read the list, and evaluate the new seed's models)."""
    text = (ROOT / "dvc.yaml").read_text()
    stages = yaml.safe_load(text)["stages"]
    for s in pipeline.TRAINED:
        assert stages[s]["matrix"] == {"seed": "${train.seeds}"}, s
        assert all("train" not in str(p) for p in stages[s]["params"]), s


def test_every_registered_vertical_gets_an_eval_cell_reading_its_own_data_only(dag):
    registered = set(verticals.names())
    assert set(PARAMS["eval"]["verticals"]) == registered
    assert {n for n in dag if n.startswith("eval@")} == {f"eval@{v}" for v in registered}
    for v in registered:
        spec, st = verticals.get(v), dag[f"eval@{v}"]
        assert {str(paths.prepared(spec.dataset)), str(paths.validated(spec.dataset)),
                f"src/rlhf_trust/evals/{v}.py"} <= st["deps"], v
        assert {str(paths.model_dir(m)) for m in PARAMS["eval"]["models"]} <= st["deps"], v
        others = registered - {v}
        assert not [d for d in st["deps"] if any(names_vertical(d, w) for w in others)], v
        base = paths.EVAL / v / "base"
        assert {f"{base}/{f}" for f in ("metrics.json", "samples.jsonl.gz", "units.csv")} <= st["outs"], v
        # a trained model's folder holds one s<k>/ per seed: the folder is the output
        assert {f"{paths.EVAL}/{v}/{m}" for m in PARAMS["eval"]["models"] if m != "base"} <= st["outs"], v
        assert all(o.startswith(f"{paths.EVAL}/{v}/") for o in st["outs"]), v


def test_each_influence_cell_reads_the_samples_of_the_change_its_stage_explains(dag):
    cells = {n for n in dag if n.startswith("influence@")}
    stages, verts = PARAMS["influence"]["stages"], PARAMS["influence"]["verticals"]
    assert cells == {f"influence@{s}-{v}" for s in stages for v in verts}
    for s in stages:
        spec = pipeline.INFLUENCE[s]
        for v in verts:
            st = dag[f"influence@{s}-{v}"]
            assert st["cmd"] == f"rlhf-trust influence --stage {s} --vertical {v}"
            need = {f"{paths.EVAL}/{v}/{m}" + ("/samples.jsonl.gz" if m == "base" else "") for m in (spec.new, spec.old)}
            need |= {str(paths.model_dir(m)) for m in (spec.model, *([spec.ref] if spec.ref else []))}
            assert need <= st["deps"], (s, v, need - st["deps"])
            others = set(verticals.names()) - {v}
            assert not [d for d in st["deps"] if any(names_vertical(d, w) for w in others)], (s, v)
            out = paths.INFLUENCE / s / v
            assert {f"{out}/{f}" for f in ("scores.parquet", "top.jsonl", "metrics.json")} <= st["outs"], (s, v)


def test_influence_explains_each_trained_model_once():
    assert pipeline.EXPLAINED_BY == {"sft": "sft", "ppo": "rm", "dpo": "dpo"}
    for spec in pipeline.INFLUENCE.values():
        assert spec.old in pipeline.MODELS and spec.new in pipeline.MODELS
        assert pipeline.PARENT[spec.new] == spec.old  # the change from the model it started from


def test_dvc_yaml_types_no_vertical():
    text = (ROOT / "dvc.yaml").read_text()
    for v in verticals.names():
        assert not re.search(rf"\b{v}\b", text), f"dvc.yaml names the vertical '{v}'"


def test_a_dataset_change_leaves_the_other_datasets_verdicts_unchanged(raw_data):
    """Fine-grained deps: training depends on outputs/validated/hh.json, eval@V on V.json; adding
    or editing another dataset's files changes only that dataset's verdict."""
    from rlhf_trust.data import validate

    files = {p.relative_to(raw_data).as_posix(): "md5" for p in raw_data.rglob("*") if p.is_file()}
    prepared = {f"{s}.jsonl": "md5" for s in ("hh_train", "hh_heldout", *verticals.names())}
    before = validate.dataset_manifests(files, prepared, {})
    after = validate.dataset_manifests({**files, "fairness/adult_0_200_test_base_rate_0.0.jsonl": "changed"},
                                       {**prepared, "fairness.jsonl": "changed"}, {})
    assert before["fairness"] != after["fairness"]
    assert {k: v for k, v in before.items() if k != "fairness"} == {k: v for k, v in after.items() if k != "fairness"}
    assert set(before["hh"]["raw_files"]) == {"hh_rlhf/harmless-base-test.jsonl.gz", "hh_rlhf/LICENSE"}
    assert len(before["fairness"]["raw_files"]) == 8


def test_bytecode_next_to_stage_sources_is_not_a_code_change():
    """Importing the package writes __pycache__ into src/ (unless PYTHONDONTWRITEBYTECODE is set);
    DVC hashes those directories as stage deps, so without .dvcignore every import re-ran the DAG."""
    from dvc.repo import Repo

    ignore = Repo(str(ROOT)).dvcignore
    assert ignore.is_ignored_file("src/rlhf_trust/evals/__pycache__/stage.cpython-311.pyc")
    assert ignore.is_ignored_file("src/rlhf_trust/report/summary.pyc")
    assert not ignore.is_ignored_file("src/rlhf_trust/evals/stage.py")


def test_plots_show_each_stage_in_pipeline_order_with_its_ci():
    import json

    plots = yaml.safe_load((ROOT / "dvc.yaml").read_text())["plots"]
    spec = plots[0]["reports/plots"]
    template = json.loads((ROOT / ".dvc" / "plots" / f"{spec['template']}.json").read_text())
    assert template["encoding"]["y"]["sort"] == list(pipeline.MODELS)
    bars = {layer["mark"]["type"]: layer["encoding"] for layer in template["layer"]}
    assert bars["errorbar"]["x"]["field"] == "ci_low" and bars["errorbar"]["x2"]["field"] == "ci_high"
