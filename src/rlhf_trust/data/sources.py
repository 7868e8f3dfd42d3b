"""`rlhf-trust data` (`make data`): fill data/ in the raw layout, then check it against data.dvc.

Two sources, named in params (`data.source`):
- `mirror`: copy a local directory already in the raw layout (default ../shared/data);
- `hub`: download Anthropic/hh-rlhf and the benchmarks' public copies (users online) and write
  them in the same layout, so everything downstream is identical.
The raw layout is documented in ../shared/data/README.md and `records.RAW_FILES`.
"""

from __future__ import annotations

import csv
import gzip
import json
import shutil
from pathlib import Path

from rlhf_trust import fileio
from rlhf_trust.config import DataConfig
from rlhf_trust.errors import DataError, UserError

# hub source: raw-layout path -> (dataset repo, file in that repo). DecodingTrust publishes its
# data files on the hub under the same names as in its GitHub repository.
DECODINGTRUST = "AI-secure/DecodingTrust"
HUB_FILES = {
    "toxicity/toxic.jsonl": (DECODINGTRUST, "toxicity/user_prompts/toxic.jsonl"),
    "toxicity/nontoxic.jsonl": (DECODINGTRUST, "toxicity/user_prompts/nontoxic.jsonl"),
    "stereotype/user_prompts.csv": (DECODINGTRUST, "stereotype/dataset/user_prompts.csv"),
    "stereotype/system_prompts.csv": (DECODINGTRUST, "stereotype/dataset/system_prompts.csv"),
    **{f"privacy/{n}.json": (DECODINGTRUST, f"privacy/enron_data/{n}.json")
       for n in ("name2email", "email2name", "one_shot", "two_shot", "five_shot",
                 "one_shot_non_domain", "two_shot_non_domain", "five_shot_non_domain", "email_freq")},
}


def from_mirror(src: Path, dest: Path) -> int:
    if not src.is_dir():
        raise DataError(f"mirror directory not found: {src} (set data.mirror_dir in params.yaml)")
    n = 0
    for p in sorted(src.rglob("*")):
        if p.is_file():
            target = dest / p.relative_to(src)
            target.parent.mkdir(parents=True, exist_ok=True)
            shutil.copyfile(p, target)
            n += 1
    if n == 0:
        raise DataError(f"mirror directory is empty: {src}")
    return n


def from_hub(cfg: DataConfig, dest: Path) -> int:  # pragma: no cover - needs internet
    """Download every raw file from the hub into `dest` in the raw layout."""
    from datasets import load_dataset
    from huggingface_hub import hf_hub_download

    n = 0
    (dest / "hh_rlhf").mkdir(parents=True, exist_ok=True)
    for subset in cfg.hh_subsets:
        ds = load_dataset("Anthropic/hh-rlhf", data_dir=subset, split=cfg.hh_split)
        with gzip.open(dest / "hh_rlhf" / f"{subset}-{cfg.hh_split}.jsonl.gz", "wt", encoding="utf-8") as f:
            for row in ds:
                f.write(json.dumps({"chosen": row["chosen"], "rejected": row["rejected"]}) + "\n")
        n += 1
    for rel, (repo, filename) in HUB_FILES.items():
        target = dest / rel
        target.parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(hf_hub_download(repo, filename, repo_type="dataset"), target)
        n += 1
    n += _ethics_from_hub(dest) + _truthfulqa_from_hub(dest)
    return n


def _ethics_from_hub(dest: Path) -> int:  # pragma: no cover - needs internet
    from datasets import load_dataset

    ds = load_dataset("hendrycks/ethics", "commonsense", split="test")
    (dest / "ethics").mkdir(parents=True, exist_ok=True)
    with open(dest / "ethics" / "cm_test.csv", "w", newline="", encoding="utf-8") as f:
        w = csv.writer(f)
        w.writerow(["label", "input", "is_short", "edited"])
        for r in ds:
            w.writerow([r["label"], r["input"], r["is_short"], r["edited"]])
    return 1


def _truthfulqa_from_hub(dest: Path) -> int:  # pragma: no cover - needs internet
    """truthful_qa multiple_choice -> the study's truth_mc.json shape (answer -> 1/0 per target)."""
    from datasets import load_dataset

    ds = load_dataset("truthfulqa/truthful_qa", "multiple_choice", split="validation")
    items = [{"question": r["question"],
              "mc1_targets": dict(zip(r["mc1_targets"]["choices"], r["mc1_targets"]["labels"])),
              "mc2_targets": dict(zip(r["mc2_targets"]["choices"], r["mc2_targets"]["labels"]))} for r in ds]
    (dest / "truthfulqa").mkdir(parents=True, exist_ok=True)
    fileio.write_json(dest / "truthfulqa" / "truth_mc.json", items)
    return 1


def _dvc_md5(dvc_file: Path) -> str | None:
    return _dvc_md5_text(dvc_file.read_text()) if dvc_file.is_file() else None


def check_against_dvc(data_dir: Path) -> str:
    """Compare data/ with data.dvc by content (and fill the DVC cache, so `dvc push` works).

    `dvc add` hashes the directory; the recorded md5 must stay the same. On a mismatch the
    committed data.dvc is restored and the command fails (exit 1).
    """
    from dvc.exceptions import NotDvcRepoError
    from dvc.repo import Repo

    dvc_file = Path(f"{data_dir}.dvc")
    before = dvc_file.read_text() if dvc_file.is_file() else None
    try:
        repo = Repo(".")
    except NotDvcRepoError:
        raise DataError(f"{Path.cwd()} is not a DVC repository: run `rlhf-trust data` from the project "
                        "root, or pass --no-check") from None
    repo.scm_context.quiet = True  # its "git add data.dvc" hint would mislead when nothing changed
    repo.add(str(data_dir))
    if before is None:
        return f"created {dvc_file}: commit it (git add {dvc_file} .gitignore) to version this data"
    expected, got = _dvc_md5_text(before), _dvc_md5(dvc_file)
    if expected != got:
        dvc_file.write_text(before)
        raise UserError(f"{data_dir}/ does not match {dvc_file} (md5 {got} != {expected}): the source "
                        f"changed; review, then `dvc add {data_dir}` and commit {dvc_file}", exit_code=1)
    return f"{data_dir}/ matches {dvc_file} (md5 {got})"


def _dvc_md5_text(text: str) -> str | None:
    import re

    m = re.search(r"md5:\s*([0-9a-f]{32}(?:\.dir)?)", text)
    return m.group(1) if m else None


def run(cfg: DataConfig, check: bool = True) -> str:
    dest = Path(cfg.dir)
    with fileio.atomic_path(dest) as tmp:
        tmp.mkdir()
        n = from_mirror(Path(cfg.mirror_dir), tmp) if cfg.source == "mirror" else from_hub(cfg, tmp)
    msg = f"wrote {n} files to {dest}/ from {cfg.source}"
    if check:
        msg += "; " + check_against_dvc(dest)
    return msg


def cli(args) -> int:
    from rlhf_trust import config

    cfg = config.load("data", args.params)
    print(run(cfg, check=not args.no_check))
    return 0
