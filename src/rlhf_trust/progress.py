"""`python -m rlhf_trust.progress -- dvc repro [...]` (`make repro`): DVC's own output, plus one line
"stage k/N, elapsed m:ss" as each stage starts or is skipped unchanged. N is `dvc stage list`'s
count; a line DVC does not print the usual way is passed through untouched."""

from __future__ import annotations

import re
import subprocess
import sys
import time

STAGE = re.compile(r"^(?:Running stage '([^']+)'|Stage '([^']+)' didn't change, skipping)")


def count_stages(dvc: str = "dvc") -> int | None:
    try:
        out = subprocess.run([dvc, "stage", "list", "--name-only"], capture_output=True, text=True,
                             timeout=120, check=False)
    except (OSError, subprocess.SubprocessError):
        return None
    names = [line for line in out.stdout.splitlines() if line.strip()]
    return len(names) if out.returncode == 0 and names else None


def progress_line(k: int, total: int | None, elapsed: float, name: str) -> str:
    m, s = divmod(int(elapsed), 60)
    return f"[stage {k}/{total if total else '?'}, elapsed {m}:{s:02d}] {name}"


def run(cmd: list[str], total: int | None, out=sys.stdout) -> int:
    t0, k = time.monotonic(), 0
    with subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, bufsize=1) as p:
        assert p.stdout is not None
        for line in p.stdout:
            m = STAGE.match(line)
            if m:
                k += 1
                print(progress_line(k, total, time.monotonic() - t0, m.group(1) or m.group(2)), file=out, flush=True)
            out.write(line)
            out.flush()
    return p.returncode


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    if argv[:1] == ["--"]:
        argv = argv[1:]
    if not argv:
        print("usage: python -m rlhf_trust.progress -- dvc repro [...]", file=sys.stderr)
        return 2
    return run(argv, count_stages(argv[0]) if argv[0].endswith("dvc") else None)


if __name__ == "__main__":
    sys.exit(main())
