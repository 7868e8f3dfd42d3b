"""`rlhf-trust --help` is instant: it imports none of the heavy libraries."""

from __future__ import annotations

import subprocess
import sys

HEAVY = ["torch", "transformers", "trl", "peft", "mlflow", "great_expectations", "datasets", "pandas"]


def test_help_imports_nothing_heavy():
    code = ("import sys, contextlib, io\n"
            "from rlhf_trust import cli\n"
            "with contextlib.redirect_stdout(io.StringIO()) as out:\n"
            "    cli.main([])\n"
            f"heavy = [m for m in {HEAVY!r} if m in sys.modules]\n"
            "print(heavy)\n")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "[]"


def test_help_lists_every_stage():
    out = subprocess.run([sys.executable, "-m", "rlhf_trust.cli", "--help"], capture_output=True, text=True,
                         check=True).stdout
    for stage in ("data", "prepare", "validate", "sft", "rm", "ppo", "dpo", "eval", "influence", "report"):
        assert stage in out


def test_a_stage_process_spares_its_exit_the_gc_but_an_in_process_call_does_not(tmp_path):
    # The exit of a stage process that has imported torch/transformers/MLflow collects garbage for
    # seconds; `main()` on its own command line freezes the heap first. Called with argv (tests,
    # in-process callers) it leaves the collector alone.
    code = ("import gc, sys\n"
            "from rlhf_trust import cli\n"
            f"rc = cli.main(['prepare', '--params', {str(tmp_path / 'none.yaml')!r}])\n"
            "print(rc, gc.get_freeze_count())\n"
            f"sys.argv = ['rlhf-trust', 'prepare', '--params', {str(tmp_path / 'none.yaml')!r}]\n"
            "rc = cli.main()\n"
            "print(rc, gc.get_freeze_count() > 0)\n")
    run = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert run.stdout.split("\n")[:2] == ["2 0", "2 True"]
    assert run.stderr.count("params file not found") == 2
