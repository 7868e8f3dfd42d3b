"""The user docs hold together: relative links and anchors resolve, the README and the guides stay
short, commit hashes live only in the dated measurement records, and every record is complete and
listed in the index."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
DOCS = ROOT / "docs"
MEASUREMENTS = DOCS / "measurements"
README_MAX_LINES = 200
GUIDE_MAX_LINES = 300

LINK = re.compile(r"!?\[[^\]]*\]\(([^)\s]+)\)")
FENCE = re.compile(r"^(```|~~~)")
# a commit hash as the docs write them: 7-40 hex digits with at least one digit and one letter
COMMIT = re.compile(r"\b(?=[0-9a-f]*[a-f])(?=[0-9a-f]*[0-9])[0-9a-f]{7,40}\b")
RECORD_FIELDS = ("**Date:**", "**Machine:**", "**Command:**")


def markdown_files() -> list[Path]:
    return [ROOT / "README.md", *sorted(DOCS.rglob("*.md"))]


def prose(path: Path) -> str:
    """The file without its fenced code blocks (links and hashes there are examples, not references)."""
    out, fenced = [], False
    for line in path.read_text(encoding="utf-8").splitlines():
        if FENCE.match(line.strip()):
            fenced = not fenced
            continue
        if not fenced:
            out.append(line)
    return "\n".join(out)


def slug(heading: str) -> str:
    """GitHub's anchor for a heading: lower case, punctuation dropped, spaces to hyphens."""
    text = re.sub(r"[^\w\- ]", "", heading.strip().lower())
    return text.replace(" ", "-")


def anchors(path: Path) -> set[str]:
    return {slug(m.group(1)) for m in re.finditer(r"^#+\s+(.*)$", prose(path), re.MULTILINE)}


def relative_links(path: Path) -> list[str]:
    return [t for t in LINK.findall(prose(path)) if not re.match(r"[a-z][a-z0-9+.-]*:", t)]


@pytest.mark.parametrize("path", markdown_files(), ids=lambda p: str(p.relative_to(ROOT)))
def test_relative_links_and_anchors_resolve(path):
    broken = []
    for target in relative_links(path):
        file_part, _, anchor = target.partition("#")
        dest = (path.parent / file_part).resolve() if file_part else path
        if not dest.exists():
            broken.append(f"{target} (no such file)")
        elif anchor and dest.suffix == ".md" and anchor not in anchors(dest):
            broken.append(f"{target} (no such heading)")
    assert not broken, f"{path.relative_to(ROOT)}: broken links: {broken}"


def test_slug_follows_github():
    assert slug("Methods (`influence.method`, `influence.compare`)") == "methods-influencemethod-influencecompare"
    assert slug("The fairness vertical") == "the-fairness-vertical"


def test_readme_and_guides_are_short():
    too_long = {}
    for path, limit in [(ROOT / "README.md", README_MAX_LINES),
                        *((p, GUIDE_MAX_LINES) for p in sorted(DOCS.glob("*.md")))]:
        n = len(path.read_text(encoding="utf-8").splitlines())
        if n > limit:
            too_long[str(path.relative_to(ROOT))] = n
    assert not too_long, f"over the line limit (README {README_MAX_LINES}, guides {GUIDE_MAX_LINES}): {too_long}"


@pytest.mark.parametrize("path", [ROOT / "README.md", *sorted(DOCS.glob("*.md"))],
                         ids=lambda p: str(p.relative_to(ROOT)))
def test_commit_hashes_only_in_measurement_records(path):
    found = COMMIT.findall(prose(path))
    assert not found, f"{path.relative_to(ROOT)} cites commits {found}: move them to a record in docs/measurements/"


def test_commit_pattern_tells_hashes_from_words():
    assert COMMIT.findall("at 68b4828, on 2026-12-03, the decade 1000000, a facade") == ["68b4828"]


def test_every_measurement_record_is_complete_and_indexed():
    index = (MEASUREMENTS / "README.md").read_text(encoding="utf-8")
    records = sorted(p for p in MEASUREMENTS.glob("*.md") if p.name != "README.md")
    assert records, "no measurement records"
    problems = []
    for p in records:
        text = p.read_text(encoding="utf-8")
        if not re.match(r"\d{4}-\d{2}-\d{2}-[a-z0-9-]+\.md$", p.name):
            problems.append(f"{p.name}: name is not YYYY-MM-DD-<what>.md")
        missing = [f for f in RECORD_FIELDS if f not in text]
        if missing or not re.search(r"\*\*Commits?:\*\*", text):
            problems.append(f"{p.name}: missing {missing or ['**Commit:**']}")
        if f"]({p.name})" not in index:
            problems.append(f"{p.name}: not listed in docs/measurements/README.md")
    assert not problems, problems
