"""Atomic file writes and small readers shared by every stage."""

from __future__ import annotations

import contextlib
import errno
import hashlib
import json
import os
import re
import shutil
import tempfile
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import Any

from rlhf_trust.errors import DataError


@contextlib.contextmanager
def atomic_path(path: str | os.PathLike, keep_old: bool = False) -> Iterator[Path]:
    """Yield a temp path beside `path`; rename it over `path` only if the block succeeds.

    Works for files and directories; an earlier result stays in place until the new one exists.
    A directory is replaced in two renames (old -> `.<name>.old`, new -> `<name>`); a kill between
    them is undone by `recover(path)`, which every later write of the same path runs first (and
    which also removes temp dirs left by killed writers). `keep_old=True` keeps `.<name>.old` until
    `commit(path)` (or `rollback(path)`): used to write a model and its metrics as one unit.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    recover(path, units=False)
    # the writer's pid in the name: `recover` removes only temp dirs whose writer is gone
    tmp = Path(tempfile.mkdtemp(prefix=f".{path.name}.{os.getpid()}.", suffix=".tmp", dir=path.parent))
    target = tmp / path.name
    try:
        with disk_errors(path):
            yield target
        if not target.exists():
            raise RuntimeError(f"nothing was written to {path}")
        if path.is_dir() and not path.is_symlink():
            old = _old(path)
            shutil.rmtree(old, ignore_errors=True)
            os.replace(path, old)
            os.replace(target, path)
            if not keep_old:
                shutil.rmtree(old, ignore_errors=True)
        else:
            os.replace(target, path)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def _old(path: Path) -> Path:
    return path.with_name(f".{path.name}.old")


def recover(path: str | os.PathLike, units: bool = True) -> None:
    """Undo what a killed writer of `path` left behind: restore `.<name>.old` (the earlier result;
    a new `path` beside it was never committed), with `units` also the copy `keep_file` made, and
    remove temp dirs of writers no longer running."""
    path = Path(path)
    for old in (_old(path), _unit_old(path)) if units else (_old(path),):
        if old.exists() or old.is_symlink():
            if path.is_dir() and not path.is_symlink():
                shutil.rmtree(path)
            elif path.exists() or path.is_symlink():
                path.unlink()
            os.replace(old, path)
    if not path.parent.is_dir():
        return
    pattern = re.compile(rf"\.{re.escape(path.name)}\.(?:(\d+)\.)?[A-Za-z0-9_]{{8}}\.tmp")
    for p in path.parent.iterdir():
        m = pattern.fullmatch(p.name)
        if m and not (m.group(1) and pid_alive(int(m.group(1)))):
            shutil.rmtree(p, ignore_errors=True) if p.is_dir() else p.unlink(missing_ok=True)


def _unit_old(path: Path) -> Path:
    return path.with_name(f".{path.name}.unit-old")


def keep_file(path: str | os.PathLike) -> None:
    """Keep the current version of file `path` (a hard link: no space needed) until `commit(path)`;
    `rollback(path)` or the next `recover(path)` puts it back."""
    path, kept = Path(path), _unit_old(Path(path))
    kept.unlink(missing_ok=True)
    if path.is_file():
        os.link(path, kept)


def commit(path: str | os.PathLike) -> None:
    """Drop the earlier result kept by `atomic_path(..., keep_old=True)` or `keep_file`."""
    for old in (_old(Path(path)), _unit_old(Path(path))):
        if old.is_dir() and not old.is_symlink():
            shutil.rmtree(old)
        else:
            old.unlink(missing_ok=True)


def rollback(path: str | os.PathLike) -> None:
    """Put back the earlier result kept by `atomic_path(..., keep_old=True)` (no-op if none)."""
    recover(path)


def pid_alive(pid: int) -> bool:
    """True while process `pid` exists on this machine."""
    if pid == os.getpid():
        return True
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


_DISK_FULL = ("no space left on device", "storagefull", "os error 28", "file write failed", "disk is full",
              "disk quota exceeded")


def is_disk_full(e: BaseException) -> bool:
    """ENOSPC as an OSError, or as the message of a library that wraps it (torch.save raises
    RuntimeError "file write failed", safetensors "StorageFull", sqlite "database or disk is full")."""
    if isinstance(e, OSError) and e.errno in (errno.ENOSPC, errno.EDQUOT):
        return True
    return any(s in str(e).lower() for s in _DISK_FULL)


@contextlib.contextmanager
def disk_errors(path: str | os.PathLike) -> Iterator[None]:
    """Turn a full disk while writing `path` into one line (DataError, exit 2)."""
    try:
        yield
    except DataError:
        raise
    except Exception as e:
        if is_disk_full(e):
            raise DataError(f"no space left on device while writing {path}; free space and re-run "
                            "(earlier results are unchanged)") from None
        raise


def write_text(path: str | os.PathLike, text: str) -> None:
    with atomic_path(path) as tmp:
        tmp.write_text(text, encoding="utf-8")


def write_json(path: str | os.PathLike, obj: Any) -> None:
    write_text(path, json.dumps(obj, indent=2, sort_keys=True, default=_jsonable) + "\n")


def _open_text(path: Path, mode: str) -> Any:
    """A text stream; `*.gz` is gzip, written with mtime 0 (the header's name is the file's own), so
    the same rows give the same bytes and a re-run leaves a git-tracked file unchanged."""
    if path.suffix != ".gz":
        return open(path, mode, encoding="utf-8")
    import gzip
    import io

    if "w" in mode:
        return io.TextIOWrapper(gzip.GzipFile(path, "wb", compresslevel=9, mtime=0), encoding="utf-8")
    return gzip.open(path, "rt", encoding="utf-8")


def write_jsonl(path: str | os.PathLike, rows: Iterable[dict]) -> int:
    n = 0
    with atomic_path(path) as tmp, _open_text(tmp, "w") as f:
        for row in rows:
            f.write(json.dumps(row, ensure_ascii=False, default=_jsonable) + "\n")
            n += 1
    return n


def read_jsonl(path: str | os.PathLike) -> list[dict]:
    path = Path(path)
    if not path.is_file():
        raise DataError(f"missing file: {path}")
    rows = []
    with _open_text(path, "r") as f:
        for i, line in enumerate(f, 1):
            if line.strip():
                try:
                    rows.append(json.loads(line))
                except json.JSONDecodeError as e:
                    raise DataError(f"{path}: line {i} is not valid JSON ({e.msg})") from None
    return rows


def read_json(path: str | os.PathLike) -> Any:
    path = Path(path)
    if not path.is_file():
        raise DataError(f"missing file: {path}")
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise DataError(f"{path}: not valid JSON ({e})") from None


def md5_file(path: str | os.PathLike, chunk: int = 1 << 20) -> str:
    h = hashlib.md5()
    with open(path, "rb") as f:
        while block := f.read(chunk):
            h.update(block)
    return h.hexdigest()


def md5_dir(path: str | os.PathLike) -> str:
    """Content hash of a directory tree (relative paths + file md5s), stable across machines."""
    path = Path(path)
    h = hashlib.md5()
    for p in sorted(q for q in path.rglob("*") if q.is_file()):
        h.update(f"{p.relative_to(path).as_posix()}:{md5_file(p)}\n".encode())
    return h.hexdigest()


def _jsonable(o: Any) -> Any:
    if hasattr(o, "item"):
        return o.item()
    if hasattr(o, "tolist"):
        return o.tolist()
    if isinstance(o, Path):
        return str(o)
    raise TypeError(f"not JSON serialisable: {type(o).__name__}")
