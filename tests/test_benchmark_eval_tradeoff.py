"""benchmarks/eval_tradeoff.py: the units-vs-minutes table read from a run's committed files."""

import json
from pathlib import Path

import bench_support
import pytest

ROOT = Path(__file__).resolve().parents[1]


def _module():
    return bench_support.load("eval_tradeoff")


def _run(tmp_path: Path, walls: dict[str, float], units: int, mde: float) -> tuple[Path, Path]:
    for model, wall in walls.items():
        cell = tmp_path / "eval" / "privacy" / model
        cell.mkdir(parents=True)
        (cell / "metrics.run.json").write_text(json.dumps({"wall_s": wall}))
        (cell / "units.csv").write_text("unit_id,value\n" + "".join(f"u{i},0\n" for i in range(units)))
    summary = tmp_path / "trust_summary.json"
    summary.write_text(json.dumps({"contrasts": {"privacy": {
        "sft-base": {"mde80": mde / 2}, "dpo-base": {"mde80": mde}, "dpo-sft": {"mde80": 9.0}}}}))
    return tmp_path / "eval", summary


def test_scales_wall_linearly_and_mde_by_root_n(tmp_path):
    mod = _module()
    eval_dir, summary = _run(tmp_path, {"base": 60.0, "sft": 60.0, "ppo": 60.0, "dpo": 60.0}, 200, 0.08)
    row = mod.measured(eval_dir, summary)["privacy"]
    # 240 s for 200 units; the worst contrast against base (dpo-sft is not one)
    assert row == {"units": 200, "wall_s_4_models": 240.0, "s_per_unit_4_models": 1.2, "mde80_vs_base": 0.08}
    assert mod.at(row, 100) == {"units": 100, "minutes": 2.0, "mde80": pytest.approx(0.08 * 2 ** 0.5, abs=1e-3)}
    assert mod.at(row, 800)["mde80"] == pytest.approx(0.04)


def test_missing_summary_is_one_line_exit_2(tmp_path, monkeypatch, capsys):
    mod = _module()
    eval_dir, _ = _run(tmp_path, {"base": 1.0, "sft": 1.0, "ppo": 1.0, "dpo": 1.0}, 4, 0.1)
    monkeypatch.setattr("sys.argv", ["eval_tradeoff.py", "--eval-dir", str(eval_dir),
                                     "--summary", str(tmp_path / "none.json")])
    with pytest.raises(SystemExit) as e:
        mod.main()
    assert e.value.code == 2
    err = capsys.readouterr().err.strip()
    assert "none.json is missing" in err and "\n" not in err
