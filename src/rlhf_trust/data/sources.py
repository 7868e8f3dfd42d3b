"""`rlhf-trust data` (`make data`): fill data/ in the raw layout, then check it against data.dvc.

Three sources, named in params (`data.source`):
- `mirror`: copy a local directory already in the raw layout (`data.mirror_dir`);
- `hub`: download Anthropic/hh-rlhf and every registered vertical's files (`VerticalSpec.hub`)
  from the Hugging Face hub, one file at a time, and write them in the same layout, so everything
  downstream is identical. `HF_ENDPOINT` points it at another hub;
- `auto` (the default): the mirror when `data.mirror_dir` is a directory, else the hub.
The command says in one line which source it used.
The raw layout is `records.raw_files()`.
"""

from __future__ import annotations

import os
import shutil
from pathlib import Path

from rlhf_trust import fileio, verticals
from rlhf_trust.config import DataConfig
from rlhf_trust.errors import DataError, UserError
from rlhf_trust.verticals import HubFile

HH_REPO = "Anthropic/hh-rlhf"   # <subset>/<split>.jsonl.gz, the raw layout's hh_rlhf/<subset>-<split>.jsonl.gz


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


def hub_files(cfg: DataConfig) -> list[HubFile]:
    """Every file `data.source: hub` fetches: HH's subsets, then each registered vertical's."""
    hh = [HubFile(HH_REPO, f"{s}/{cfg.hh_split}.jsonl.gz", f"hh_rlhf/{s}-{cfg.hh_split}.jsonl.gz")
          for s in cfg.hh_subsets]
    return hh + [f for spec in verticals.specs() for f in spec.hub]


def fetch(f: HubFile, dest: Path) -> Path:
    """Download one hub file (huggingface_hub's cache) and write it at dest / f.dest."""
    from huggingface_hub import hf_hub_download

    try:
        local = hf_hub_download(f.repo, f.path, repo_type="dataset", revision=f.revision)
    except OSError as e:  # the hub's HTTP, not-found and offline errors are all OSErrors
        if fileio.is_disk_full(e):
            raise
        reason = str(e).strip().splitlines()[0][:160] if str(e).strip() else type(e).__name__
        raise DataError(f"cannot download {f.path} from the hub dataset {f.repo}: {reason}") from None
    target = dest / f.dest
    target.parent.mkdir(parents=True, exist_ok=True)
    f.convert(Path(local), target)
    return target


def from_hub(cfg: DataConfig, dest: Path) -> int:
    """Download every raw file from the hub into `dest` in the raw layout."""
    files = hub_files(cfg)
    for f in files:
        fetch(f, dest)
    return len(files)


def _dvc_md5(dvc_file: Path) -> str | None:
    return _dvc_md5_text(dvc_file.read_text()) if dvc_file.is_file() else None


def check_against_dvc(data_dir: Path) -> str:
    """Compare data/ with data.dvc by content (and fill the DVC cache, so `dvc push` works).

    `dvc add` hashes the directory; the recorded md5 must stay the same. On a mismatch the
    committed data.dvc is restored and the command fails (exit 1).
    """
    from dvc.exceptions import DvcException, NotDvcRepoError
    from dvc.repo import Repo
    from dvc.scm import SCMError

    dvc_file = Path(f"{data_dir}.dvc")
    before = dvc_file.read_text() if dvc_file.is_file() else None
    try:
        repo = Repo(".")
        repo.scm_context.quiet = True  # its "git add data.dvc" hint would mislead when nothing changed
    except NotDvcRepoError:
        raise DataError(f"{Path.cwd()} is not a DVC repository: run `rlhf-trust data` from the project "
                        "root, or pass --no-check") from None
    except SCMError as e:  # e.g. a copy of the project without .git: DVC's three chained errors
        raise DataError(f"DVC: {_first_line(e)}; the project must be a git clone (git clone, or git init "
                        "and commit), or pass --no-check") from None
    try:
        repo.add(str(data_dir))
    except DvcException as e:
        raise DataError(f"dvc add {data_dir} failed: {_first_line(e)}") from None
    if before is None:
        return f"created {dvc_file}: commit it (git add {dvc_file} .gitignore) to version this data"
    expected, got = _dvc_md5_text(before), _dvc_md5(dvc_file)
    if expected != got:
        dvc_file.write_text(before)
        raise UserError(f"{data_dir}/ does not match {dvc_file} (md5 {got} != {expected}): the source "
                        f"changed; review, then `dvc add {data_dir}` and commit {dvc_file}", exit_code=1)
    return f"{data_dir}/ matches {dvc_file} (md5 {got})"


def _first_line(e: BaseException) -> str:
    return (str(e).strip().splitlines() or [type(e).__name__])[0][:300]


def _dvc_md5_text(text: str) -> str | None:
    import re

    m = re.search(r"md5:\s*([0-9a-f]{32}(?:\.dir)?)", text)
    return m.group(1) if m else None


def choose(cfg: DataConfig) -> tuple[str, str]:
    """(source, the line that says which): `auto` takes the mirror when its directory exists."""
    use_mirror = cfg.source == "mirror" or (cfg.source == "auto" and Path(cfg.mirror_dir).is_dir())
    if use_mirror:
        return "mirror", f"data: using the local mirror {cfg.mirror_dir}"
    where = f"no local mirror at {cfg.mirror_dir}; " if cfg.source == "auto" else ""
    if os.environ.get("HF_HUB_OFFLINE", "0").strip().lower() in ("1", "true", "yes", "on"):
        raise DataError(f"data: {where}the Hugging Face hub is off (HF_HUB_OFFLINE=1): set HF_HUB_OFFLINE=0 "
                        "to download, or data.mirror_dir to a local copy in the raw layout")
    return "hub", f"data: {where}downloading from the Hugging Face hub"


def run(cfg: DataConfig, check: bool = True, say=print) -> str:
    source, line = choose(cfg)
    say(line)
    dest = Path(cfg.dir)
    with fileio.atomic_path(dest) as tmp:
        tmp.mkdir()
        n = from_mirror(Path(cfg.mirror_dir), tmp) if source == "mirror" else from_hub(cfg, tmp)
    msg = f"wrote {n} files to {dest}/ from {source}"
    if check:
        msg += "; " + check_against_dvc(dest)
    return msg


def cli(args) -> int:
    from rlhf_trust import config

    cfg = config.load("data", args.params)
    print(run(cfg, check=not args.no_check))
    return 0
