"""The raw data layout (documented in the data mirror's README.md) as typed records.

HH-RLHF, the training data, is parsed here; each benchmark dataset is parsed by its vertical
(`VerticalSpec.load`, rlhf_trust/verticals.py). Every parser raises DataError with one clear line
when a file is missing, unreadable or malformed. `load(name, data_dir)` reads a prepared JSONL if
`data_dir` holds one, else parses the raw layout.
"""

from __future__ import annotations

import fnmatch
import gzip
from pathlib import Path

from rlhf_trust import verticals
from rlhf_trust.data.readers import read_lines
from rlhf_trust.errors import DataError
from rlhf_trust.fileio import read_jsonl

ASSISTANT = "\n\nAssistant:"
HUMAN = "\n\nHuman:"

HH_FILES = ["hh_rlhf/*.jsonl.gz"]
HH_OTHER_FILES = ["hh_rlhf/LICENSE*", "hh_rlhf/README*"]
HH_DATASETS = ("hh_train", "hh_heldout", "hh")


def raw_files() -> dict[str, list[str]]:
    """Per dataset, the raw files (globs under the raw data dir) its parser reads."""
    return {"hh": HH_FILES, **{s.dataset: list(s.raw_files) for s in verticals.specs()}}


def other_files() -> dict[str, list[str]]:
    """Per dataset, the files shipped beside its data that no parser reads."""
    return {"hh": HH_OTHER_FILES, **{s.dataset: list(s.other_files) for s in verticals.specs()}}


def unexpected_files(raw_dir: Path) -> dict[str, list[str]]:
    """Per dataset, the files in its directories that are neither its data nor a known extra."""
    out: dict[str, list[str]] = {}
    others = other_files()
    for name, patterns in raw_files().items():
        allowed = patterns + others.get(name, []) + ["*/LICENSE*", "*/README*"]
        for d in sorted({(raw_dir / p).parent for p in patterns}):
            if not d.is_dir():
                continue
            for f in sorted(d.rglob("*")):
                rel = f.relative_to(raw_dir).as_posix()
                if not f.is_dir() and not any(fnmatch.fnmatch(rel, a) for a in allowed):
                    out.setdefault(name, []).append(rel)
    return out


# ---------------------------------------------------------------------------------------------
# HH-RLHF
# ---------------------------------------------------------------------------------------------
def split_pair(chosen: str, rejected: str) -> tuple[str, str, str] | None:
    """Split an HH pair at the last "\\n\\nAssistant:" into (prompt, chosen, rejected).

    The prompt is the shared prefix up to and including the last Assistant marker of the
    chosen dialogue; None when either dialogue has no Assistant turn or the prefixes differ.
    """
    cut = chosen.rfind(ASSISTANT)
    if cut < 0:
        return None
    prompt = chosen[: cut + len(ASSISTANT)]
    if not rejected.startswith(prompt):
        cut_r = rejected.rfind(ASSISTANT)
        if cut_r < 0 or rejected[: cut_r + len(ASSISTANT)] != prompt:
            return None
    return prompt, chosen[len(prompt):], rejected[len(prompt):]


def hh_files(raw_dir: Path) -> list[Path]:
    d = raw_dir / "hh_rlhf"
    if not d.is_dir():
        raise DataError(f"missing directory: {d}")
    files = sorted(d.glob("*.jsonl.gz"))  # only these: a stray file is not data (validate names it)
    if not files:
        raise DataError(f"no HH-RLHF files (*.jsonl.gz) in {d}")
    return files


def load_hh_raw(raw_dir: Path) -> list[dict]:
    """Every raw HH pair as {"id","source","line","chosen_full","rejected_full"}."""
    out = []
    for path in hh_files(raw_dir):
        opener = gzip.open if path.suffix == ".gz" else open
        stem = path.name.split(".")[0]
        for line, obj in read_lines(path, opener):
            for key in ("chosen", "rejected"):
                if key not in obj:
                    raise DataError(f"{path}: line {line} has no '{key}' field")
            out.append({"id": f"{stem}-{line:06d}", "source": stem, "line": line,
                        "chosen_full": obj["chosen"], "rejected_full": obj["rejected"]})
    return out


def hh_pairs(raw_dir: Path) -> list[dict]:
    """Raw HH pairs split into {"id","prompt","chosen","rejected"} (unsplittable pairs dropped)."""
    pairs = []
    for r in load_hh_raw(raw_dir):
        if not isinstance(r["chosen_full"], str) or not isinstance(r["rejected_full"], str):
            continue
        split = split_pair(r["chosen_full"], r["rejected_full"])
        if split:
            pairs.append({"id": r["id"], "prompt": split[0], "chosen": split[1], "rejected": split[2]})
    return pairs


def load(name: str, data_dir: str | Path) -> list[dict]:
    """Records of one dataset from a prepared dir (<name>.jsonl) or a raw-layout dir."""
    data_dir = Path(data_dir)
    prepared = data_dir / f"{name}.jsonl"
    if prepared.is_file():
        return read_jsonl(prepared)
    if not data_dir.is_dir():
        raise DataError(f"missing data directory: {data_dir}")
    if name in HH_DATASETS:
        return hh_pairs(data_dir)
    specs = verticals.by_dataset()
    if name not in specs:
        raise DataError(f"unknown dataset '{name}' (known: {', '.join([*HH_DATASETS[:2], *specs])})")
    return specs[name].load(data_dir)
