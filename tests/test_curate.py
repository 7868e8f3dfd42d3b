"""`rlhf-trust curate`: pass-through when off, exactly the listed pairs dropped when on,
the curated set's md5 on MLflow and in the report's provenance. Real HH pairs from the fixtures."""

from __future__ import annotations

import json
from pathlib import Path

import pandas as pd
import pytest

from rlhf_trust import config, fileio
from rlhf_trust.data import curate, records
from rlhf_trust.errors import UserError


@pytest.fixture
def project(tmp_path, monkeypatch, raw_data):
    monkeypatch.chdir(tmp_path)
    pairs = records.hh_pairs(raw_data)[:40]
    prep = tmp_path / "outputs" / "prepared"
    fileio.write_jsonl(prep / "hh_train.jsonl", pairs[:30])
    fileio.write_jsonl(prep / "hh_heldout.jsonl", pairs[30:])
    ids = [str(p["id"]) for p in pairs[:30]]
    scores = [((i * 7) % 11 - 5) / 5 for i in range(30)]          # raw DataInf-like scores, both signs
    d = tmp_path / "influence" / "dpo" / "toxicity"
    d.mkdir(parents=True)
    pd.DataFrame({"id": ids, "score": scores,
                  "score_normalized": [s / 1.0 for s in scores]}).to_parquet(d / "scores.parquet")
    return tmp_path, ids, scores


def cfg(**kw):
    return config.build(config.CurateConfig, kw, "curate")


def test_disabled_passes_the_prepared_set_through_byte_for_byte(project):
    m = curate.curate(cfg())
    for split in ("hh_train", "hh_heldout"):
        assert Path(f"outputs/curated/{split}.jsonl").read_bytes() == Path(f"outputs/prepared/{split}.jsonl").read_bytes()
    assert m["dropped"] == [] and m["mode"] == "pass_through" and m["n_out"] == m["n_in"] == 30
    assert m["train_data.version"] == fileio.md5_file("outputs/prepared/hh_train.jsonl") == m["prepared_md5"]


def test_drop_harmful_drops_exactly_the_listed_pairs(project):
    _, ids, scores = project
    m = curate.curate(cfg(enabled=True, harmful="toward_change", top_k=4))
    # toward_change: the most negative scores pushed the model towards its (worse) new behaviour
    expect = sorted(range(30), key=lambda i: (scores[i], i))[:4]
    dropped = {r["id"] for r in m["dropped"]}
    assert dropped == {ids[i] for i in expect}
    src = Path("outputs/prepared/hh_train.jsonl").read_text().splitlines(keepends=True)
    kept = [line for line in src if json.loads(line)["id"] not in dropped]
    assert Path("outputs/curated/hh_train.jsonl").read_text() == "".join(kept)
    assert all(r["scores"]["dpo/toxicity"] == scores[ids.index(r["id"])] for r in m["dropped"])
    assert json.loads(Path("metrics/curate_manifest.json").read_text())["dropped"] == m["dropped"]
    assert m["train_data.version"] != m["prepared_md5"] and m["n_out"] == 26


def test_keep_helpful_and_auto_direction(project):
    _, ids, scores = project
    Path("reports").mkdir()
    # DPO made toxicity *more* trustworthy: the pairs resisting that change (positive scores) hurt
    Path("reports/trust_summary.json").write_text(json.dumps(
        {"contrasts": {"toxicity": {"dpo-sft": {"delta": -0.1, "more_trustworthy": True}}}}))
    m = curate.curate(cfg(enabled=True, mode="keep_helpful"))
    assert m["sources"][0]["harmful"] == "against_change"
    kept = [json.loads(line)["id"] for line in Path("outputs/curated/hh_train.jsonl").read_text().splitlines()]
    assert kept == [ids[i] for i in range(30) if scores[i] < 0]
    Path("reports/trust_summary.json").write_text(json.dumps({"contrasts": {}}))
    with pytest.raises(UserError, match="harmful: auto"):
        curate.curate(cfg(enabled=True))


def test_curated_md5_reaches_mlflow_and_the_report(project):
    import mlflow

    from rlhf_trust import cli, runinfo
    from rlhf_trust.report import summary

    Path("params.yaml").write_text("curate: {enabled: true, harmful: toward_change, top_k: 3}\nreport: {top_k: 2}\n")
    assert cli.main(["curate"]) == 0
    md5 = fileio.md5_file("outputs/curated/hh_train.jsonl")
    run = mlflow.get_run(runinfo.read(Path("metrics/curate.json"))["mlflow_run_id"])
    assert run.data.tags["train_data.version"] == md5
    assert md5 in [d.dataset.digest for d in run.inputs.dataset_inputs]
    parent = mlflow.get_run(run.data.tags["mlflow.parentRunId"])
    assert parent.data.tags["train_data.version"] == md5
    assert json.loads(Path("metrics/curate.json").read_text()) == {"n_in": 30, "n_out": 27, "n_dropped": 3}
    summary.write_report(Path("reports"), top_k=2)
    assert f"training set (curated HH set md5): `{md5}`" in Path("reports/trust_summary.md").read_text()
    assert json.loads(Path("reports/trust_summary.json").read_text())["provenance"]["train_data.version"] == md5
    assert md5 in Path("reports/trust_summary.html").read_text()


def _scores(ids, norm, path=Path("influence/dpo/toxicity/scores.parquet")):
    pd.DataFrame({"id": ids, "score": norm, "score_normalized": norm}).to_parquet(path)


@pytest.mark.parametrize("mode", ["drop_harmful", "keep_helpful"])
def test_nan_scores_are_refused_not_curated_silently(project, mode):
    _, ids, scores = project
    kw = {"top_k": None, "top_fraction": None} if mode == "keep_helpful" else {}
    _scores(ids, [float("nan")] * 30)          # every score NaN: drop_harmful dropped 0, keep_helpful kept all
    with pytest.raises(UserError, match=r"30 of 30 pairs have a NaN") as e:
        curate.curate(cfg(enabled=True, harmful="toward_change", mode=mode, **kw))
    assert e.value.exit_code == 2
    _scores(ids, [*scores[:29], float("nan")])  # one NaN-scored pair would count as "helpful"
    with pytest.raises(UserError, match=r"1 of 30 pairs have a NaN"):
        curate.curate(cfg(enabled=True, harmful="toward_change", mode=mode, **kw))
    assert not Path("outputs/curated/hh_train.jsonl").exists()


def test_scores_of_pairs_outside_the_training_set_are_refused(project):
    _, ids, scores = project
    _scores([f"other-{i}" for i in ids], scores)   # another data version's ids: nothing would be dropped
    with pytest.raises(UserError, match=r"30 of 30 scored ids are not in the training set") as e:
        curate.curate(cfg(enabled=True, harmful="toward_change"))
    assert e.value.exit_code == 2


def test_unreadable_scores_give_one_line_and_exit_2(project, capsys):
    from rlhf_trust import cli

    path = Path("influence/dpo/toxicity/scores.parquet")
    Path("params.yaml").write_text("curate: {enabled: true, harmful: toward_change, top_k: 3}\n")
    whole = path.read_bytes()
    path.write_bytes(whole[: len(whole) // 2])    # truncated
    assert cli.main(["curate"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "unreadable influence scores" in err[0] and "Traceback" not in err[0]
    pd.DataFrame({"id": ["a"], "score": [1.0]}).to_parquet(path)    # no score_normalized column
    assert cli.main(["curate"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "unreadable influence scores" in err[0]


def test_vertical_names_must_be_registered(project, tmp_path):
    _, ids, scores = project
    outside = tmp_path / "elsewhere" / "x"
    outside.mkdir(parents=True)
    _scores(ids, scores, outside / "scores.parquet")   # a scores file outside influence/
    for name in ("../../elsewhere/x", "no_such_vertical"):
        with pytest.raises(UserError, match=r"curate.verticals: unknown vertical") as e:
            curate.curate(cfg(enabled=True, harmful="toward_change", verticals=[name], stages=["dpo"]))
        assert e.value.exit_code == 2


def test_auto_direction_needs_a_boolean_not_a_string(project):
    Path("reports").mkdir()
    Path("reports/trust_summary.json").write_text(json.dumps(
        {"contrasts": {"toxicity": {"dpo-sft": {"delta": -0.1, "more_trustworthy": "false"}}}}))
    with pytest.raises(UserError, match="harmful: auto"):   # "false" is truthy: it would flip the direction
        curate.curate(cfg(enabled=True))
