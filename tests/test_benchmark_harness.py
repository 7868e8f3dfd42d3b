"""benchmarks/harness.py: the result schema and its metadata on a trivial measurement, and the suite's
conventions (every kept benchmark on the harness, `make bench` runs exactly them)."""

import datetime
import hashlib
import importlib.util
import json
import re
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
BENCH = ROOT / "benchmarks"


def _harness():
    spec = importlib.util.spec_from_file_location("harness", BENCH / "harness.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def test_a_trivial_measurement_gets_the_schema_and_the_machine_facts(tmp_path, monkeypatch):
    h = _harness()
    params = tmp_path / "params.yaml"
    params.write_text("eval:\n  seed: 3\n")
    out = tmp_path / "r" / "trivial.json"
    monkeypatch.setattr(sys, "argv", ["benchmarks/trivial.py", "--quick", "--out", str(out)])
    args = h.parser("A trivial benchmark.\n\nMore.").parse_args(["--quick", "--out", str(out), "--params", str(params)])
    assert h.write_result("trivial", args, {"sum": 1 + 1}, setup={"n": 2}) == out
    r = json.loads(out.read_text())
    assert r["schema"] == h.SCHEMA == 1 and r["benchmark"] == "trivial" and r["quick"] is True
    assert r["results"] == {"sum": 2} and r["setup"] == {"n": 2}
    m = r["meta"]
    head = subprocess.run(["git", "-C", str(ROOT), "rev-parse", "HEAD"], check=True, capture_output=True,
                          text=True).stdout.strip()
    assert m["commit"] == head and re.fullmatch(r"[0-9a-f]{40}", m["commit"])
    assert isinstance(m["tree_clean"], bool)
    assert m["params_hash"] == hashlib.sha256(params.read_bytes()).hexdigest()[:16]
    assert m["command"] == f"python benchmarks/trivial.py --quick --out {out}"
    assert datetime.datetime.fromisoformat(m["date"]).tzinfo is not None
    assert m["cpu"]["cores"] >= 1 and m["cpu"]["model"]
    assert set(m["cpu"]["flags"]) == {"amx", "avx512_bf16", "avx2"}
    assert all(isinstance(v, bool) for v in m["cpu"]["flags"].values())
    assert m["threads"] >= 1 and m["python"].count(".") == 2
    import torch

    assert m["libraries"]["torch"] == torch.__version__


def test_results_name_no_machine_directories(tmp_path, monkeypatch):
    h = _harness()
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    got = h.portable({"models": h.ROOT / "outputs" / "models", "data": [str(tmp_path / "home" / "data")], "n": 3})
    assert got == {"models": "outputs/models", "data": ["~/data"], "n": 3}


def test_quick_results_never_land_on_the_full_size_ones():
    h = _harness()
    quick = h.parser(None).parse_args(["--quick"])
    full = h.parser(None).parse_args([])
    assert h.out_path("x", quick) == BENCH / "results" / "quick" / "x.json"
    assert h.out_path("x", full) == BENCH / "results" / "x.json"


def test_data_dir_prefers_the_flag_then_the_environment(tmp_path, monkeypatch):
    h = _harness()
    monkeypatch.setenv("RLHF_TRUST_DATA", str(tmp_path / "env"))
    assert h.data_dir(h.parser(None).parse_args(["--data", str(tmp_path / "flag")])) == tmp_path / "flag"
    assert h.data_dir(h.parser(None).parse_args([])) == tmp_path / "env"


def _scripts() -> list[Path]:
    return sorted(p for p in BENCH.glob("*.py") if p.name != "harness.py")


@pytest.mark.parametrize("script", _scripts(), ids=lambda p: p.name)
def test_every_benchmark_uses_the_harness_and_imports_no_other_script(script):
    text = script.read_text()
    assert "harness.parser(" in text and "harness.write_result(" in text  # --quick, --out, the schema
    assert "sys.path" not in text
    others = {p.stem for p in _scripts()} - {script.stem}
    assert not re.findall(rf"^\s*(?:from|import) ({'|'.join(others)})\b", text, re.MULTILINE)


def test_make_bench_runs_exactly_the_kept_benchmarks():
    makefile = (ROOT / "Makefile").read_text()
    listed = re.search(r"^BENCHMARKS := ((?:.*\\\n)*.*)$", makefile, re.MULTILINE).group(1)
    assert sorted(listed.replace("\\\n", " ").split()) == [p.stem for p in _scripts()]
    assert re.search(r"^bench: ", makefile, re.MULTILINE) and "BENCH_ARGS ?= --quick" in makefile
