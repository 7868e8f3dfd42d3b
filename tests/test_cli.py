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
