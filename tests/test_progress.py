"""`make repro`'s progress lines: stage k/N and elapsed time around DVC's own output."""

from __future__ import annotations

import io
import sys

from rlhf_trust import progress


def test_each_started_or_skipped_stage_gets_a_progress_line():
    script = ("print(\"Stage 'prepare' didn't change, skipping\"); print('noise');"
              "print(\"Running stage 'eval@privacy':\"); print('> rlhf-trust eval')")
    out = io.StringIO()
    assert progress.run([sys.executable, "-c", script], total=33, out=out) == 0
    lines = out.getvalue().splitlines()
    assert lines[0] == "[stage 1/33, elapsed 0:00] prepare"
    assert lines[3] == "[stage 2/33, elapsed 0:00] eval@privacy"
    assert lines[1].startswith("Stage 'prepare'") and "noise" in lines and lines[-1] == "> rlhf-trust eval"


def test_the_command_exit_status_is_kept_and_an_unknown_total_is_a_question_mark():
    out = io.StringIO()
    assert progress.run([sys.executable, "-c", "print(\"Running stage 'x':\"); raise SystemExit(3)"], None, out) == 3
    assert out.getvalue().startswith("[stage 1/?, elapsed 0:00] x")
