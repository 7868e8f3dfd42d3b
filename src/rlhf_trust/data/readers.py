"""Small readers of raw data files with one-line errors (DataError): a missing, empty, unreadable,
truncated or malformed file, a directory or a symlink loop is named in one line. Used by the
dataset parsers in records.py and by vertical modules that parse their own files.
"""

from __future__ import annotations

import csv
import errno
import gzip
import json
import os
import stat
import zlib
from collections.abc import Callable
from pathlib import Path

from rlhf_trust.errors import DataError


def need(path: Path) -> Path:
    """`path` if it is a readable, non-empty regular file, else one line saying what it is instead."""
    try:
        st = path.stat()
    except FileNotFoundError:
        if path.is_symlink():
            raise DataError(f"broken symlink: {path} -> {os.readlink(path)}") from None
        raise DataError(f"missing file: {path}") from None
    except OSError as e:
        if e.errno == errno.ELOOP:
            raise DataError(f"symlink loop: {path}") from None
        raise DataError(f"cannot read {path}: {e.strerror}") from None
    if stat.S_ISDIR(st.st_mode):
        raise DataError(f"{path} is a directory, expected a file")
    if not stat.S_ISREG(st.st_mode):
        raise DataError(f"{path} is not a regular file")
    if st.st_size == 0:
        raise DataError(f"empty file: {path}")
    return path


def os_error(path: Path, e: OSError) -> DataError:
    if isinstance(e, PermissionError):
        return DataError(f"{path}: permission denied")
    return DataError(f"{path}: unreadable or truncated ({type(e).__name__}: {e})")


def read_lines(path: Path, opener: Callable = open) -> list[tuple[int, dict]]:
    rows = []
    try:
        with opener(need(path), "rt", encoding="utf-8-sig") as f:
            for i, line in enumerate(f, 1):
                if not line.strip():
                    continue
                try:
                    obj = json.loads(line)
                except json.JSONDecodeError as e:
                    raise DataError(f"{path}: line {i} is not valid JSON ({e.msg})") from None
                if not isinstance(obj, dict):
                    raise DataError(f"{path}: line {i} is not a JSON object")
                rows.append((i, obj))
    except UnicodeDecodeError:
        raise DataError(f"{path}: not UTF-8 text") from None
    except PermissionError as e:
        raise os_error(path, e) from None
    except (EOFError, gzip.BadGzipFile, zlib.error, OSError) as e:
        raise DataError(f"{path}: unreadable or truncated ({type(e).__name__}: {e})") from None
    if not rows:
        raise DataError(f"empty file: {path}")
    return rows


def read_csv(path: Path, columns: list[str]) -> list[dict]:
    try:
        # utf-8-sig: a byte-order mark (Excel's "CSV UTF-8") is not part of the first column's name
        with open(need(path), newline="", encoding="utf-8-sig") as f:
            reader = csv.DictReader(f)
            missing = [c for c in columns if c not in (reader.fieldnames or [])]
            if missing:
                raise DataError(f"{path}: missing column(s) {', '.join(missing)}")
            rows = list(reader)
    except UnicodeDecodeError:
        raise DataError(f"{path}: not UTF-8 text") from None
    except csv.Error as e:
        raise DataError(f"{path}: malformed CSV ({e})") from None
    except OSError as e:
        raise os_error(path, e) from None
    if not rows:
        raise DataError(f"empty file: {path}")
    return rows


def read_json(path: Path) -> object:
    try:
        return json.loads(need(path).read_text(encoding="utf-8-sig"))
    except UnicodeDecodeError:
        raise DataError(f"{path}: not UTF-8 text") from None
    except OSError as e:
        raise os_error(path, e) from None
    except json.JSONDecodeError as e:
        raise DataError(f"{path}: not valid JSON ({e.msg} at line {e.lineno})") from None
