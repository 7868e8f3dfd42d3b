"""The study's grid: `key=v1,v2` arguments -> cells, one per combination of values.

Keys are params keys (dotted: `dpo.beta`), checked against the params file, or a short alias
(`seeds` -> `train.seeds`, `arms` -> `train.arms`). Values are read as YAML scalars (`0.1` is a float,
`[a, b]` a list); a list-valued key takes one value per cell unless written as a YAML list.
"""

from __future__ import annotations

import itertools
import re
from collections.abc import Mapping, Sequence
from typing import Any

from rlhf_trust.errors import ConfigError, UserError

ALIASES: dict[str, str] = {"seeds": "train.seeds", "seed": "train.seeds", "arms": "train.arms"}
SEED_KEYS: tuple[str, ...] = ("train.seeds", "train.seed")   # keys whose cells are seeds of one arm


def resolve_key(key: str, params: Mapping[str, Any]) -> str:
    """The dotted params key that `key` (an alias or a dotted key) names; UserError (exit 2) if none."""
    full = ALIASES.get(key, key)
    node: Any = params
    for part in full.split("."):
        if not isinstance(node, Mapping) or part not in node:
            alias = f" (alias of {full})" if full != key else ""
            raise UserError(f"grid key '{key}'{alias} is not a key of the params file")
        node = node[part]
    return full


def parse_value(text: str) -> Any:
    import yaml

    try:
        value = yaml.safe_load(text)
    except yaml.YAMLError:
        return text
    if isinstance(value, str):   # YAML 1.1 reads `1e-3` (no dot) as a string
        try:
            return float(value)
        except ValueError:
            return value
    return value


def split_values(text: str) -> list[str]:
    """`0,1,2` -> ['0', '1', '2']; commas inside [...] or {...} do not split (`[a,b],[c]`)."""
    out, depth, cur = [], 0, ""
    for ch in text:
        depth += ch in "[{"
        depth -= ch in "]}"
        if ch == "," and depth == 0:
            out.append(cur)
            cur = ""
        else:
            cur += ch
    out.append(cur)
    return [v.strip() for v in out if v.strip()]


def parse_grid(args: Sequence[str], params: Mapping[str, Any]) -> dict[str, list[Any]]:
    """['seeds=0,1', 'dpo.beta=0.1,0.2'] -> {'train.seeds': [0, 1], 'dpo.beta': [0.1, 0.2]}."""
    if not args:
        raise UserError("--grid needs at least one key=v1,v2 argument")
    grid: dict[str, list[Any]] = {}
    for arg in args:
        key, sep, values = arg.partition("=")
        if not sep or not key.strip() or not values.strip():
            raise UserError(f"grid argument '{arg}' is not key=v1,v2")
        full = resolve_key(key.strip(), params)
        if full in grid:
            raise UserError(f"grid key '{full}' given twice")
        grid[full] = [parse_value(v) for v in split_values(values)]
    return grid


def seed_key(grid: Mapping[str, list[Any]], explicit: str | None = None) -> str | None:
    """The grid key whose cells are training seeds of one group (None: every cell is its own group)."""
    if explicit:
        full = ALIASES.get(explicit, explicit)
        if full not in grid:
            raise UserError(f"--seed-key {explicit} is not a grid key ({', '.join(grid)})")
        return full
    return next((k for k in SEED_KEYS if k in grid), None)


def cell_id(overrides: Mapping[str, Any]) -> str:
    """A stable, file-name-safe name: `dpo.beta=0.1,train.seeds=0` -> `dpo.beta-0.1_train.seeds-0`."""
    parts = [f"{k}-{_slug(v)}" for k, v in overrides.items()]
    return "_".join(parts)


def _slug(v: Any) -> str:
    text = ",".join(map(str, v)) if isinstance(v, list) else str(v)
    return re.sub(r"[^A-Za-z0-9.+-]+", "-", text).strip("-") or "x"


def cells(grid: Mapping[str, list[Any]]) -> dict[str, dict[str, Any]]:
    """cell id -> {key: value}, every combination, in grid order."""
    keys = list(grid)
    out: dict[str, dict[str, Any]] = {}
    for combo in itertools.product(*(grid[k] for k in keys)):
        overrides = dict(zip(keys, combo, strict=True))
        out[cell_id(overrides)] = overrides
    return out


def apply(params: Mapping[str, Any], overrides: Mapping[str, Any]) -> dict:
    """A deep copy of `params` with each dotted key set. A key whose current value is a list gets a
    one-element list when given a scalar (`train.seeds=1` -> `[1]`)."""
    import copy

    out = copy.deepcopy(dict(params))
    for key, value in overrides.items():
        *parents, leaf = key.split(".")
        node = out
        for p in parents:
            node = node[p]
        if not isinstance(node, dict) or leaf not in node:
            raise ConfigError(f"params: {key}: not a key of the params file")
        if isinstance(node[leaf], list) and not isinstance(value, list):
            value = [value]
        node[leaf] = value
    return out
