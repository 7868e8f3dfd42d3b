"""The report and a samples page as a reader's browser shows them: a real headless Chromium renders
both and the DOM it builds holds the findings paragraph, the forest plot and a sample row, with the
text planted in the data shown as text, never run.

Chromium is a system package (`.ci/run` installs it, as it does PostgreSQL). Without it the test
fails with one line saying what to install: never skipped."""

from __future__ import annotations

import re
import shutil
import subprocess
from pathlib import Path

import pytest

from rlhf_trust import fileio
from rlhf_trust.evals.stage import write_units
from rlhf_trust.report import summary

PLANTED = "<script>document.title='pwned'</script><img src=x onerror=\"document.title='pwned'\">"


def chromium() -> str:
    for name in ("chromium", "chromium-browser", "google-chrome"):
        path = shutil.which(name)
        if path:
            return path
    pytest.fail("chromium not found: `apt-get install chromium` (.ci/run installs it)", pytrace=False)


def dom(page: Path, tmp_path: Path) -> str:
    out = subprocess.run([chromium(), "--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
                          f"--user-data-dir={tmp_path / 'profile'}", "--dump-dom", page.resolve().as_uri()],
                         capture_output=True, text=True, timeout=120, check=False)
    assert out.returncode == 0 and "<body" in out.stdout, out.stderr[-2000:]
    return out.stdout


def cell(root: Path, model: str, values: list[float]) -> None:
    d = root / "eval" / "privacy" / model
    fileio.write_json(d / "metrics.json", {"leakage_rate": sum(values) / len(values), "n_samples": len(values),
                                           "leakage_rate_ci95": {"low": 0.0, "high": 1.0}})
    write_units(d / "units.csv", [(f"r{i:02d}|pii", v) for i, v in enumerate(values)])
    fileio.write_jsonl(d / "samples.jsonl.gz", [
        {"id": f"r{i:02d}", "condition": "pii", "sample_index": 0, "prompt": f"Email of person {i}? {PLANTED}",
         "generation": PLANTED if v else "I cannot share that.", "leaked": bool(v)} for i, v in enumerate(values)])


@pytest.mark.slow
def test_report_and_samples_page_render_in_chromium(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    Path("params.yaml").write_text("report: {top_k: 2}\n")
    cell(tmp_path, "base", [1.0] * 30 + [0.0] * 10)
    for m in ("sft", "ppo", "dpo"):
        cell(tmp_path, m, [1.0] * 4 + [0.0] * 36)
    summary.write_report(Path("reports"), top_k=2)

    report = dom(Path("reports/trust_summary.html"), tmp_path)
    findings = re.search(r'<p class="findings" id="findings">(.*?)</p>', report, re.DOTALL)
    assert findings and "changes are significant after Holm's adjustment: sft-base on privacy" in findings.group(1)
    assert re.search(r'<img class="forest" id="forest" alt="forest" src="data:image/png;base64,', report)
    assert report.index('id="findings"') < report.index('id="forest"') < report.index("<h2>Changes")
    assert '<a href="samples/privacy.html">privacy</a>' in report

    page = dom(Path("reports/samples/privacy.html"), tmp_path)
    rows = re.findall(r'<tr class="unit" id="r10\|pii">(.*?)</tr>', page, re.DOTALL)
    assert rows and "I cannot share that." in rows[0] and "-1" in rows[0]   # leaked under base, not after
    assert "<script" not in page.split("<body", 1)[1] and "<img src" not in page
    assert "&lt;script&gt;document.title='pwned'&lt;/script&gt;" in page
    assert "<title>privacy: samples</title>" in page   # the planted script did not run
