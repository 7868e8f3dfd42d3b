"""Checkpoints are data not code, a corrupt checkpoint is skipped with
one warning, resume is exact at every kill point, and a stage's model + metrics change together."""

from __future__ import annotations

import os
import pickle
import random
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from disk_support import full_disk
from train_support import KillAt, make_layout, train_cfg

from rlhf_trust import cli, fileio
from rlhf_trust.models import load_stage_info
from rlhf_trust.train import checkpoints, ppo, sft

ROOT = Path(__file__).resolve().parents[1]
KEYS = ("train_steps", "train_loss_last", "train_loss_mean", "heldout_chosen_nll_per_token")


# ------------------------------------------------------------------------------ no code from checkpoints
def test_no_weights_only_false_anywhere():
    needle = "weights_only=" + "False"  # spelled so that this file does not match itself
    hits = [f"{p.relative_to(ROOT)}:{i}" for d in ("src", "benchmarks", "tests") for p in (ROOT / d).rglob("*.py")
            for i, line in enumerate(p.read_text(encoding="utf-8").splitlines(), 1)
            if needle in line.replace(" ", "")]
    assert not hits, hits


class _Evil:
    def __init__(self, marker: Path):
        self.marker = marker

    def __reduce__(self):
        return os.system, (f"touch {self.marker}",)


def test_ppo_rng_state_loads_with_weights_only_and_restores_exactly(tmp_path):
    random.seed(1), np.random.seed(2), torch.manual_seed(3), np.random.standard_normal()
    torch.save(ppo._rng_state(), tmp_path / "rng-0.pt")
    expected = (random.random(), np.random.standard_normal(3).tolist(), torch.rand(3).tolist())
    random.seed(9), np.random.seed(9), torch.manual_seed(9)
    ppo._set_rng_state(torch.load(tmp_path / "rng-0.pt", weights_only=True))
    assert (random.random(), np.random.standard_normal(3).tolist(), torch.rand(3).tolist()) == expected


def test_ppo_checkpoint_with_a_pickled_command_is_refused(tmp_path, capsys):
    marker = tmp_path / "pwned"
    ckpt_dir = tmp_path / "checkpoints" / "ppo"
    fp = {"params": {"x": 1}, "inputs": {}}
    assert checkpoints.checkpoint_to_resume(ckpt_dir, fp, True) is None
    ck = ckpt_dir / "checkpoint-2"
    ck.mkdir()
    torch.save({"update": 2, "policy": {}, "value": {}, "optimizer": {}, "log_history": []}, ck / ppo.STATE_FILE)
    torch.save(ppo._rng_state(), ck / "rng-0.pt")
    assert checkpoints.checkpoint_to_resume(ckpt_dir, fp, True) == str(ck)  # a genuine one is used
    with open(ck / "rng-0.pt", "wb") as f:  # the attack from the issue
        pickle.dump(_Evil(marker), f)
    with pytest.raises(pickle.UnpicklingError):
        ppo.load_state(ck)
    assert checkpoints.checkpoint_to_resume(ckpt_dir, fp, True) is None
    err = [line for line in capsys.readouterr().err.splitlines() if line.startswith("rlhf-trust")]
    assert len(err) == 1, err
    assert err[0].startswith("rlhf-trust ppo: warning: unusable checkpoint checkpoint-2 (rng-0.pt: UnpicklingError")
    assert err[0].endswith("removed, starting over")
    assert not marker.exists() and not ck.exists()


# ------------------------------------------------------------------------------ corrupt checkpoints
@pytest.fixture(scope="module")
def base_layout(tmp_path_factory):
    return make_layout(tmp_path_factory.mktemp("hardening"), n_train=16)


@pytest.fixture(scope="module")
def full_run(base_layout, tmp_path_factory):
    from train_support import copy_layout

    layout = copy_layout(base_layout, tmp_path_factory.mktemp("full"))
    return sft.run(train_cfg("sft", save_steps=2), layout)


def _fresh(base_layout, tmp_path):
    from train_support import copy_layout

    return copy_layout(base_layout, tmp_path)


def test_truncated_checkpoint_starts_over_with_one_warning(base_layout, full_run, tmp_path, capsys):
    layout = _fresh(base_layout, tmp_path)
    cfg = train_cfg("sft", save_steps=2)
    with pytest.raises(KeyboardInterrupt):
        sft.run(cfg, layout, callbacks=[KillAt(3)])
    ck = layout.checkpoints("sft") / "checkpoint-2"
    os.truncate(ck / "adapter_model.safetensors", 100)  # `truncate -s 100` from the issue
    capsys.readouterr()
    m = sft.run(cfg, layout)
    err = [line for line in capsys.readouterr().err.splitlines() if line.startswith("rlhf-trust sft: warning")]
    assert len(err) == 1 and "checkpoint-2 (adapter_model.safetensors" in err[0] and "starting over" in err[0]
    assert m["resumed_from_step"] == 0
    for k in KEYS:
        assert m[k] == pytest.approx(full_run[k], rel=1e-5), k


def test_checkpoint_killed_mid_write_falls_back_to_the_previous_one(base_layout, full_run, tmp_path, capsys,
                                                                    monkeypatch):
    from transformers import TrainerState

    layout = _fresh(base_layout, tmp_path)
    cfg = train_cfg("sft", save_steps=1)
    real = TrainerState.save_to_json

    def killed_at_3(self, path):  # trainer_state.json is the last file of a checkpoint
        if self.global_step == 3:
            raise KeyboardInterrupt("killed while writing checkpoint-3")
        return real(self, path)

    monkeypatch.setattr(TrainerState, "save_to_json", killed_at_3)
    with pytest.raises(KeyboardInterrupt):
        sft.run(cfg, layout)
    monkeypatch.setattr(TrainerState, "save_to_json", real)
    assert sorted(p.name for p in layout.checkpoints("sft").glob("checkpoint-*")) == ["checkpoint-2", "checkpoint-3"]
    capsys.readouterr()
    m = sft.run(cfg, layout)
    err = [line for line in capsys.readouterr().err.splitlines() if line.startswith("rlhf-trust sft: warning")]
    assert len(err) == 1 and "checkpoint-3 (no trainer_state.json)" in err[0] and "resuming from checkpoint-2" in err[0]
    assert m["resumed_from_step"] == 2
    for k in KEYS:
        assert m[k] == pytest.approx(full_run[k], rel=1e-5), k


# ------------------------------------------------------------------------------ exact resume everywhere
def _killed_while_writing_model_dir(monkeypatch, run) -> None:
    """run() is killed (KeyboardInterrupt) while it writes the finished model's directory."""
    from rlhf_trust.models import store

    def killed(*a, **kw):
        raise KeyboardInterrupt("killed while the model directory is written")

    with monkeypatch.context() as m:
        m.setattr(store, "write_stage_info", killed)
        with pytest.raises(KeyboardInterrupt):
            run()


def test_kill_while_model_dir_is_written_resumes_exactly(base_layout, full_run, tmp_path, monkeypatch):
    layout = _fresh(base_layout, tmp_path)
    cfg = train_cfg("sft", save_steps=2)
    _killed_while_writing_model_dir(monkeypatch, lambda: sft.run(cfg, layout))
    assert not layout.model("sft").exists() and (layout.checkpoints("sft") / "checkpoint-4").is_dir()
    m = sft.run(cfg, layout)
    assert m["train_steps"] == full_run["train_steps"] == 4  # not one step past max_steps
    for k in KEYS:
        assert m[k] == pytest.approx(full_run[k], rel=1e-5), k
    assert not list(layout.models_dir.glob(".sft.*"))


def test_kill_between_the_two_renames_is_recovered(tmp_path, monkeypatch):
    out = tmp_path / "sft"
    with fileio.atomic_path(out) as t:
        t.mkdir()
        (t / "weights").write_text("v1")
    real, calls = os.replace, []

    def replace(a, b):
        calls.append(a)
        if len(calls) == 2:
            raise KeyboardInterrupt("killed between the renames")
        return real(a, b)

    monkeypatch.setattr(os, "replace", replace)
    with pytest.raises(KeyboardInterrupt), fileio.atomic_path(out) as t:
        t.mkdir()
        (t / "weights").write_text("v2")
    monkeypatch.setattr(os, "replace", real)
    assert not out.exists() and (tmp_path / ".sft.old" / "weights").read_text() == "v1"  # the state
    fileio.recover(out)
    assert (out / "weights").read_text() == "v1" and not (tmp_path / ".sft.old").exists()


def test_leftover_temp_dirs_are_removed_at_the_next_start(tmp_path):
    dead = subprocess.Popen([sys.executable, "-c", "pass"])
    dead.wait()
    stale = [tmp_path / f".sft.{dead.pid}.abcd_123.tmp", tmp_path / ".sft.k2j4h5g6.tmp"]  # new and old naming
    live = tmp_path / f".sft.{os.getpid()}.zzzzzzzz.tmp"  # a writer still running: kept
    other = tmp_path / ".sft.json.abcdefgh.tmp"  # another output's temp dir: not ours
    for d in (*stale, live, other):
        d.mkdir()
    with fileio.atomic_path(tmp_path / "sft") as t:
        t.mkdir()
    assert not any(d.exists() for d in stale) and live.exists() and other.exists()


# ------------------------------------------------------------------------------ model + metrics one unit
def _project(tmp_path: Path, base_layout) -> Path:
    import shutil

    proj = tmp_path / "proj"
    shutil.copytree(base_layout.data_dir, proj / "outputs" / "curated")
    shutil.copytree(base_layout.model("base"), proj / "outputs" / "models" / "base")
    (proj / "params.yaml").write_text(
        "sft:\n  max_length: 96\n  max_prompt_length: 48\n  batch_size: 4\n  logging_steps: 1\n  threads: 1\n"
        "  device: cpu\n  save_steps: 2\n  learning_rate: 5.0e-3\n")
    return proj


def test_full_disk_on_metrics_keeps_model_metrics_and_checkpoints(base_layout, tmp_path, monkeypatch, capsys):
    proj = _project(tmp_path, base_layout)
    monkeypatch.chdir(proj)
    assert cli.main(["sft"]) == 0
    before_md5 = load_stage_info(proj / "outputs/models/sft/s0")["md5"]
    before_metrics = (proj / "metrics/sft/s0.json").read_bytes()
    (proj / "params.yaml").write_text((proj / "params.yaml").read_text().replace("5.0e-3", "1.0e-3"))
    capsys.readouterr()
    with full_disk(proj / "metrics", monkeypatch):
        rc = cli.main(["sft"])
    out = capsys.readouterr().err
    err = [line for line in out.splitlines() if line.startswith("rlhf-trust")]
    assert rc == 2 and len(err) == 1 and "Traceback" not in out, out
    assert err[0].startswith("rlhf-trust sft: error: no space left on device while writing") and "metrics" in err[0]
    assert load_stage_info(proj / "outputs/models/sft/s0")["md5"] == before_md5  # neither the model ...
    assert (proj / "metrics/sft/s0.json").read_bytes() == before_metrics  # ... nor the metrics changed
    assert (proj / "outputs/checkpoints/sft/s0/checkpoint-4").is_dir()  # kept for the re-run
    assert not list((proj / "outputs/models").glob("sft/.s0*"))
    # with space again: resumes from the finished checkpoint, and both change together
    assert cli.main(["sft"]) == 0
    from rlhf_trust import runinfo

    after = runinfo.read(proj / "metrics/sft/s0.json")  # metrics + sft.run.json (resume step, step count)
    assert after["resumed_from_step"] == 4 and after["train_steps"] == 4
    assert load_stage_info(proj / "outputs/models/sft/s0")["md5"] != before_md5
    assert not (proj / "outputs/checkpoints/sft/s0").exists()


@pytest.mark.parametrize("stage", ["rm", "dpo"])
def test_rm_dpo_kill_while_model_dir_is_written_resume_exactly(tmp_path_factory, tmp_path, monkeypatch, stage):
    """The finished-checkpoint path for a reward model (LoRA + trainable score head) and for DPO."""
    import importlib

    from train_support import copy_layout, trained_layout


    mod = importlib.import_module(f"rlhf_trust.train.{stage}")
    src = trained_layout(tmp_path_factory, ("sft",))
    cfg = train_cfg(stage, save_steps=2)
    full = mod.run(cfg, copy_layout(src, tmp_path / "full"))
    layout = copy_layout(src, tmp_path / "killed")
    _killed_while_writing_model_dir(monkeypatch, lambda: mod.run(cfg, layout))
    m = mod.run(cfg, layout)
    assert m["train_steps"] == full["train_steps"]
    for k, v in full.items():
        if k.startswith(("train_loss", "heldout")) and isinstance(v, float):
            assert m[k] == pytest.approx(v, rel=1e-5, abs=1e-6), k
