"""Parse the raw data layout (see ../shared/data/README.md) into typed records.

One loader per dataset; each raises DataError with one clear line when a file is missing,
unreadable or malformed. `load(name, data_dir)` reads a prepared JSONL if `data_dir` holds one,
else parses the raw layout. The Enron data is read as JSON: never unpickle data.
"""

from __future__ import annotations

import fnmatch
import gzip
from pathlib import Path

from rlhf_trust.data.readers import read_csv, read_json, read_lines
from rlhf_trust.errors import DataError
from rlhf_trust.fileio import read_jsonl

ASSISTANT = "\n\nAssistant:"
HUMAN = "\n\nHuman:"

# Raw files per dataset (relative to the raw data dir). HH is the training data; every benchmark
# dataset is declared by its vertical module (RAW_FILES, OTHER_FILES, EXPECTED_ROWS, load) in the
# registry (rlhf_trust/evals/__init__.py). `RAW_FILES`, `OTHER_FILES`, `EXPECTED_ROWS` and
# `BENCHMARKS` below are read from it when first used (module __getattr__).
HH_FILES = ["hh_rlhf/*.jsonl.gz"]
HH_OTHER_FILES = ["hh_rlhf/LICENSE*", "hh_rlhf/README*"]


def _verticals() -> dict:
    from rlhf_trust import evals  # the registry (light: vertical modules import no heavy library)

    return {mod.DATASET: mod for mod in evals.modules().values()}


def __getattr__(name: str):
    mods = _verticals() if name in ("RAW_FILES", "OTHER_FILES", "EXPECTED_ROWS", "BENCHMARKS") else None
    if name == "RAW_FILES":
        return {"hh": HH_FILES, **{d: list(m.RAW_FILES) for d, m in mods.items()}}
    if name == "OTHER_FILES":
        return {"hh": HH_OTHER_FILES, **{d: list(getattr(m, "OTHER_FILES", ())) for d, m in mods.items()}}
    if name == "EXPECTED_ROWS":
        return {d: m.EXPECTED_ROWS for d, m in mods.items()}
    if name == "BENCHMARKS":  # dataset -> parser
        return {d: m.load for d, m in mods.items()}
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def unexpected_files(raw_dir: Path) -> dict[str, list[str]]:
    """Per dataset, the files in its directories that are neither its data nor a known extra."""
    out: dict[str, list[str]] = {}
    others = __getattr__("OTHER_FILES")
    for name, patterns in __getattr__("RAW_FILES").items():
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


# ---------------------------------------------------------------------------------------------
# Benchmarks
# ---------------------------------------------------------------------------------------------
def _score(part: object, key: str = "toxicity") -> float | None:
    return part.get(key) if isinstance(part, dict) else None


def load_toxicity(raw_dir: Path) -> list[dict]:
    out = []
    for subset in ("toxic", "nontoxic"):
        path = raw_dir / "toxicity" / f"{subset}.jsonl"
        for line, obj in read_lines(path):
            prompt, cont = obj.get("prompt"), obj.get("continuation")
            if not isinstance(prompt, dict) or "text" not in prompt:
                raise DataError(f"{path}: line {line} has no prompt.text")
            out.append({
                "id": f"{subset}-{line:05d}", "subset": subset, "prompt": prompt["text"],
                "prompt_toxicity": _score(prompt),
                "continuation": cont.get("text") if isinstance(cont, dict) else None,
                "continuation_toxicity": _score(cont),
            })
    return out


def bias_system_prompts(raw_dir: str | Path) -> dict[str, str]:
    raw_dir = Path(raw_dir)
    rows = read_csv(raw_dir / "stereotype" / "system_prompts.csv", ["type", "system_prompt"])
    return {r["type"]: r["system_prompt"] for r in rows}


def load_bias(raw_dir: Path) -> list[dict]:
    cols = ["stereotype_topic", "target_group", "stereotype_template", "user_prompt"]
    rows = read_csv(raw_dir / "stereotype" / "user_prompts.csv", cols)
    return [{
        "id": f"bias-{i:04d}", "topic": r["stereotype_topic"], "target_group": r["target_group"],
        "template": r["stereotype_template"],
        "statement": r["stereotype_template"].replace("[target_group]", r["target_group"]),
        "user_prompt": r["user_prompt"],
    } for i, r in enumerate(rows)]


def load_ethics(raw_dir: Path) -> list[dict]:
    path = raw_dir / "ethics" / "cm_test.csv"
    out = []
    for i, r in enumerate(read_csv(path, ["label", "input", "is_short"])):
        try:
            label = int(r["label"])
        except (TypeError, ValueError):
            label = r["label"]  # kept as-is: the validation gate reports it
        out.append({"id": f"ethics-{i:05d}", "label": label, "input": r["input"],
                    "is_short": str(r["is_short"]).strip().lower() == "true"})
    return out


def load_truthfulness(raw_dir: Path) -> list[dict]:
    path = raw_dir / "truthfulqa" / "truth_mc.json"
    data = read_json(path)
    if not isinstance(data, list):
        raise DataError(f"{path}: expected a JSON list of questions")
    out = []
    for i, q in enumerate(data):
        if not isinstance(q, dict) or "mc1_targets" not in q or "question" not in q:
            raise DataError(f"{path}: item {i} has no question/mc1_targets")
        mc1, mc2 = q["mc1_targets"], q.get("mc2_targets", {})
        if not isinstance(mc1, dict) or not isinstance(mc2, dict):
            raise DataError(f"{path}: item {i} targets must be answer -> label mappings")
        choices = list(mc1)
        labels = list(mc1.values())
        out.append({
            "id": f"tqa-{i:03d}", "question": q["question"], "mc1_choices": choices,
            "mc1_labels": labels,
            "mc1_correct": labels.index(1) if labels.count(1) == 1 else -1,
            "mc2_choices": list(mc2), "mc2_labels": list(mc2.values()),
        })
    return out


def load_privacy(raw_dir: Path) -> list[dict]:
    d = raw_dir / "privacy"
    name2email = read_json(d / "name2email.json")
    if not isinstance(name2email, dict):
        raise DataError(f"{d / 'name2email.json'}: expected a name -> email mapping")
    shots = {}
    for k in ("one_shot", "two_shot", "five_shot"):
        m = read_json(d / f"{k}.json")
        if not isinstance(m, dict):
            raise DataError(f"{d / (k + '.json')}: expected an email -> demonstrations mapping")
        shots[k] = m
    freq = read_json(d / "email_freq.json")
    if not isinstance(freq, dict):
        raise DataError(f"{d / 'email_freq.json'}: expected an email -> count mapping")
    return [{
        "id": f"enron-{i:04d}", "name": name, "email": email,
        "freq": freq.get(email) if isinstance(email, str) else None,
        **{k: (shots[k].get(email, []) if isinstance(email, str) else []) for k in shots},
    } for i, (name, email) in enumerate(name2email.items())]




def load(name: str, data_dir: str | Path) -> list[dict]:
    """Records of one dataset from a prepared dir (<name>.jsonl) or a raw-layout dir."""
    data_dir = Path(data_dir)
    prepared = data_dir / f"{name}.jsonl"
    if prepared.is_file():
        return read_jsonl(prepared)
    if not data_dir.is_dir():
        raise DataError(f"missing data directory: {data_dir}")
    if name in ("hh_train", "hh_heldout", "hh"):
        return hh_pairs(data_dir)
    loaders = __getattr__("BENCHMARKS")
    if name not in loaders:
        raise DataError(f"unknown dataset '{name}' (known: hh_train, hh_heldout, {', '.join(loaders)})")
    return loaders[name](data_dir)
