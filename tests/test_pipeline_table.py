"""dvc.yaml and the pipeline table (rlhf_trust/pipeline.py) agree, whatever shape dvc.yaml's
stanzas take (plain stages, matrices over models / verticals / stages): every table stage is one
dvc.yaml stage that writes all of the table's outputs and reads at least its inputs, and every
dvc.yaml stage is in the table. Compared on the stages DVC itself resolves from dvc.yaml + params."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from rlhf_trust import evals, pipeline

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def dvc_stages():
    from dvc.repo import Repo

    repo = Repo(str(ROOT))
    try:
        return {s.addressing: ({d.def_path for d in s.deps}, {o.def_path for o in s.outs})
                for s in repo.index.stages if s.addressing != "data.dvc"}
    finally:
        repo.close()


@pytest.fixture(scope="module")
def table():
    params = yaml.safe_load((ROOT / "params.yaml").read_text())
    ev, inf = params["eval"], params["influence"]
    datasets = {s.name: s.dataset for s in evals.specs()}
    return pipeline.stages(list(ev["verticals"]), ev["models"], inf["stages"], inf["verticals"], datasets)


def covered(path: str, paths: set[str]) -> bool:
    """`path` itself or a directory above it is in `paths`."""
    return any(path == p or path.startswith(p.rstrip("/") + "/") for p in paths)


def test_every_table_stage_is_one_dvc_stage_with_its_inputs_and_outputs(table, dvc_stages):
    for st in table:
        owners = [name for name, (_, outs) in dvc_stages.items() if all(covered(o, outs) for o in st.outs)]
        assert len(owners) == 1, f"{st.name}: outputs {st.outs} written by {owners or 'no dvc.yaml stage'}"
        deps = dvc_stages[owners[0]][0]
        missing = [d for d in st.deps if not covered(d, deps)]
        assert not missing, f"{st.name} (dvc.yaml {owners[0]}) does not depend on {missing}"


def test_every_dvc_stage_is_in_the_table(table, dvc_stages):
    produced = [o for st in table for o in st.outs]
    for name, (_, outs) in dvc_stages.items():
        assert any(covered(o, outs) for o in produced), f"dvc.yaml stage {name} is not in the pipeline table"


def test_influence_explains_each_trained_model_once():
    assert pipeline.EXPLAINED_BY == {"sft": "sft", "ppo": "rm", "dpo": "dpo"}
    for spec in pipeline.INFLUENCE.values():
        assert spec.old in pipeline.MODELS and spec.new in pipeline.MODELS
        assert pipeline.PARENT[spec.new] == spec.old  # the change from the model it started from


def test_a_dataset_change_leaves_the_other_datasets_verdicts_unchanged(shared_data):
    """Fine-grained deps: training depends on outputs/validated/hh.json, eval@V on V.json; adding
    or editing another dataset's files changes only that dataset's verdict."""
    from rlhf_trust.data import validate

    files = {p.relative_to(shared_data).as_posix(): "md5" for p in shared_data.rglob("*") if p.is_file()}
    prepared = {f"{s}.jsonl": "md5" for s in ("hh_train", "hh_heldout", *evals.VERTICALS)}
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
