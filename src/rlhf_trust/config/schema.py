"""The params schema engine: read params.yaml, build typed section dataclasses from it, and say
what is wrong in one line (ConfigError -> exit 2).

Type checks and unknown keys are generic, from the dataclass annotations (`build`); range checks
are each section's `check()`, written with `require`. Hand-written rather than pydantic: the
sections are plain dataclasses that every stage and test constructs directly, the errors must be
one line naming the key, and pydantic's messages are multi-line. No project imports but errors.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import math
import types
import typing
from pathlib import Path
from typing import Any, Literal

from rlhf_trust.errors import ConfigError

DEFAULT_PARAMS = Path("params.yaml")


def require(ok: bool, key: str, problem: str) -> None:
    if not ok:
        raise ConfigError(f"params: {key}: {problem}")


def read_params(path: str | Path = DEFAULT_PARAMS, sections: Any = ()) -> dict[str, Any]:
    """The params file as a mapping of sections (`sections`: the known names)."""
    import yaml  # light; kept local so `--help` stays instant

    path = Path(path)
    if path.is_dir():
        raise ConfigError(f"params: {path} is a directory, not a params file")
    if not path.is_file():
        raise ConfigError(f"params file not found: {path}")
    try:
        raw = yaml.load(path.read_text(encoding="utf-8"), Loader=_unique_key_loader())
    except UnicodeDecodeError as e:
        raise ConfigError(f"params: {path} is not UTF-8 text (byte {e.start})") from None
    except OSError as e:
        raise ConfigError(f"params: cannot read {path} ({e.strerror})") from None
    except yaml.YAMLError as e:
        mark = getattr(e, "problem_mark", None)
        where = f" (line {mark.line + 1})" if mark else ""
        problem = getattr(e, "problem", None) or ""
        detail = f": {problem}" if problem.startswith("duplicate key") else ""
        raise ConfigError(f"params: {path} is not valid YAML{where}{detail}") from None
    if raw is None:  # empty or only comments: the code's defaults are not params.yaml's, so refuse
        raise ConfigError(f"params: {path} is empty (no sections); copy params.yaml and edit it")
    if not isinstance(raw, dict):
        raise ConfigError(f"params: {path} must be a mapping of sections")
    unknown = sorted(set(raw) - set(sections))
    if unknown:
        raise ConfigError(f"params: unknown section '{unknown[0]}' (known: {', '.join(sections)})")
    return raw


def _unique_key_loader() -> type:
    """yaml.SafeLoader that rejects a key given twice in one mapping (PyYAML silently keeps the
    last one; there is no option for this, hence the subclass)."""
    import yaml

    class UniqueKeyLoader(yaml.SafeLoader):
        def construct_mapping(self, node, deep=False):
            seen = set()
            for key_node, _ in node.value:
                key = self.construct_object(key_node, deep=deep)
                if key in seen:
                    raise yaml.constructor.ConstructorError(
                        None, None, f"duplicate key {key!r}", key_node.start_mark)
                seen.add(key)
            return super().construct_mapping(node, deep=deep)

    return UniqueKeyLoader


def build(cls: type, data: Any, prefix: str) -> Any:
    """Build dataclass `cls` from a mapping, checking unknown keys and types. Returns the instance."""
    if data is None:
        data = {}
    if not isinstance(data, dict):
        raise ConfigError(f"params: {prefix}: must be a mapping, got {type(data).__name__}")
    hints = typing.get_type_hints(cls)
    names = {f.name for f in dataclasses.fields(cls)}
    for key in data:
        if key not in names:
            raise ConfigError(f"params: unknown key '{prefix}.{key}' (known: {', '.join(sorted(names))})")
    kwargs = {k: _coerce(hints[k], v, f"{prefix}.{k}") for k, v in data.items()}
    return cls(**kwargs)


def _coerce(tp: Any, value: Any, key: str) -> Any:
    origin = typing.get_origin(tp)
    args = typing.get_args(tp)
    if origin in (typing.Union, types.UnionType):
        if value is None and type(None) in args:
            return None
        inner = [a for a in args if a is not type(None)]
        for alt in inner[:-1]:  # e.g. `int | Literal["auto"]`: the first alternative that accepts it
            try:
                return _coerce(alt, value, key)
            except ConfigError:
                pass
        return _coerce(inner[-1], value, key)
    if origin is Literal:
        if value not in args:
            raise ConfigError(f"params: {key}: must be one of {list(args)}, got {value!r}")
        return value
    if dataclasses.is_dataclass(tp):
        return build(tp, value, key)
    if origin is list:
        if not isinstance(value, list):
            raise ConfigError(f"params: {key}: must be a list, got {type(value).__name__}")
        return [_coerce(args[0], v, f"{key}[{i}]") for i, v in enumerate(value)]
    if origin is dict:
        if not isinstance(value, dict):
            raise ConfigError(f"params: {key}: must be a mapping, got {type(value).__name__}")
        return dict(value)
    if tp is Any:
        return value
    if tp is bool:
        if not isinstance(value, bool):
            raise ConfigError(f"params: {key}: must be true or false, got {value!r}")
        return value
    if tp is int:
        if isinstance(value, bool) or not isinstance(value, int):
            raise ConfigError(f"params: {key}: must be an integer, got {value!r}")
        return value
    if tp is float:
        if isinstance(value, str):  # YAML reads "1e-4" (no dot) as a string
            try:
                value = float(value)
            except ValueError:
                pass
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise ConfigError(f"params: {key}: must be a number, got {value!r}")
        if not math.isfinite(value):
            raise ConfigError(f"params: {key}: must be a finite number, got {value!r}")
        return float(value)
    if tp is str:
        if not isinstance(value, str):
            raise ConfigError(f"params: {key}: must be a string, got {value!r}")
        return value
    return value


def params_hash(cfg: Any) -> str:
    """Stable short hash of a section (goes into MLflow tags and cache keys)."""
    blob = json.dumps(dataclasses.asdict(cfg), sort_keys=True, default=str)
    return hashlib.sha256(blob.encode()).hexdigest()[:16]


def as_flat_dict(cfg: Any, prefix: str = "") -> dict[str, Any]:
    out: dict[str, Any] = {}
    for k, v in dataclasses.asdict(cfg).items():
        key = f"{prefix}{k}"
        if isinstance(v, dict):
            for k2, v2 in flatten(v, key + ".").items():
                out[k2] = v2
        else:
            out[key] = v
    return out


def flatten(d: dict, prefix: str) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for k, v in d.items():
        if isinstance(v, dict):
            out.update(flatten(v, f"{prefix}{k}."))
        else:
            out[f"{prefix}{k}"] = v
    return out
