"""One typed config, loaded from params.yaml and validated at start.

Each section is a dataclass; `load(section)` returns only that section, validated. Errors name the
key and the problem in one line (ConfigError -> exit 2). Range checks live in each dataclass's
`check()`; type checks and unknown keys are handled generically from the annotations.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import math
import types
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

from rlhf_trust.errors import ConfigError

DEFAULT_PARAMS = Path("params.yaml")


# ----------------------------------------------------------------------------------------------
# Sections
# ----------------------------------------------------------------------------------------------
@dataclass
class DataConfig:
    """Where `rlhf-trust data` fills `data/` from."""

    source: Literal["mirror", "hub"] = "mirror"
    mirror_dir: str = "../shared/data"   # a local copy in the raw layout (see data/README)
    dir: str = "data"                    # the DVC-tracked raw directory
    hh_subsets: list[str] = field(default_factory=lambda: ["harmless-base"])  # hub: which HH subsets
    hh_split: str = "test"               # hub: split written to hh_rlhf/<subset>-<split>.jsonl.gz

    def check(self) -> None:
        _require(bool(self.hh_subsets), "data.hh_subsets", "must name at least one subset")


@dataclass
class PrepareConfig:
    seed: int = 0
    heldout_fraction: float = 0.1
    max_train_pairs: int | None = None    # None = all
    max_heldout_pairs: int | None = None
    max_prompt_chars: int = 2000             # HH prompts are cut (from the left) to keep recent turns
    max_response_chars: int = 1000

    def check(self) -> None:
        _require(0 < self.heldout_fraction < 1, "prepare.heldout_fraction", "must be in (0, 1)")
        for k in ("max_train_pairs", "max_heldout_pairs"):
            v = getattr(self, k)
            _require(v is None or v > 0, f"prepare.{k}", "must be positive or null")
        _require(self.max_prompt_chars > 0 and self.max_response_chars > 0,
                 "prepare.max_*_chars", "must be positive")


@dataclass
class ValidateConfig:
    min_hh_pairs: int = 100                  # fewer raw HH pairs than this fails the gate
    max_text_chars: int = 50000              # any single text field longer than this fails
    docs_dir: str = "reports/data_docs"

    def check(self) -> None:
        _require(self.min_hh_pairs >= 1, "validate.min_hh_pairs", "must be >= 1")
        _require(self.max_text_chars >= 100, "validate.max_text_chars", "must be >= 100")


@dataclass
class ModelConfig:
    """The base model: a hub id, a local path, `gemma-3-270m` (offline wheel) or `tiny-gpt-neox`."""

    spec: str = "gemma-3-270m"
    revision: str | None = None
    dtype: Literal["float32", "bfloat16", "float16"] = "float32"
    cache_dir: str = "~/.cache/rlhf-trust"   # materialised safetensors of GGUF models
    # tiny-gpt-neox only (tests, quick runs)
    tiny_hidden_size: int = 64
    tiny_layers: int = 2
    tiny_heads: int = 4
    tiny_vocab_size: int = 512
    tiny_max_positions: int = 512
    seed: int = 0

    def check(self) -> None:
        _require(bool(self.spec.strip()), "model.spec", "must not be empty")
        for k in ("tiny_hidden_size", "tiny_layers", "tiny_heads", "tiny_max_positions"):
            _require(getattr(self, k) >= 1, f"model.{k}", "must be >= 1")
        _require(self.tiny_vocab_size >= 256, "model.tiny_vocab_size", "must be >= 256 (the byte-level alphabet)")
        _require(self.tiny_hidden_size % self.tiny_heads == 0, "model.tiny_hidden_size",
                 "must be divisible by model.tiny_heads")


@dataclass
class LoraConfig:
    enabled: bool = True                     # false = full fine-tuning
    r: int = 8
    alpha: int = 16
    dropout: float = 0.0
    target_modules: str = "all-linear"

    def check(self) -> None:
        _require(self.r >= 1, "lora.r", "must be >= 1")
        _require(0 <= self.dropout < 1, "lora.dropout", "must be in [0, 1)")


@dataclass
class TrainCommon:
    seed: int = 0
    learning_rate: float = 1e-4
    epochs: float = 1.0
    max_steps: int = -1                      # > 0 overrides epochs
    batch_size: int = 4
    grad_accum: int = 1
    max_length: int = 256
    max_prompt_length: int = 128
    max_train_pairs: int | None = None    # cap on the prepared train split (None = all)
    max_heldout_pairs: int | None = None  # cap on the held-out split used for final metrics
    eval_batch_size: int = 8                 # batch size of the held-out metric passes
    save_steps: int = 20                     # checkpoint cadence (resume after a crash)
    logging_steps: int = 5
    resume: bool = True                      # continue from outputs/checkpoints/<stage> if it matches
    device: Literal["auto", "cpu", "cuda", "mps"] = "auto"
    threads: int = 0                         # 0 = torch default
    precision: Literal["float32", "bfloat16", "float16"] = "float32"  # mixed precision on GPUs
    gradient_checkpointing: bool = False
    optimizer: str = "adamw_torch"           # a transformers `optim` name (the study's DPO: rmsprop)
    lr_scheduler: str = "linear"             # a transformers scheduler name (PPO always runs constant)
    warmup_steps: int = 0
    weight_decay: float = 0.0
    adam_beta2: float = 0.999                # the study's trlx runs: 0.95
    max_grad_norm: float = 1.0               # the study's DPO code: 10
    lora: LoraConfig = field(default_factory=LoraConfig)

    def check_common(self, name: str) -> None:
        _require(self.learning_rate > 0, f"{name}.learning_rate", "must be > 0")
        _require(self.epochs > 0, f"{name}.epochs", "must be > 0")
        _require(self.batch_size >= 1, f"{name}.batch_size", "must be >= 1")
        _require(self.grad_accum >= 1, f"{name}.grad_accum", "must be >= 1")
        _require(self.max_length >= 8, f"{name}.max_length", "must be >= 8")
        _require(0 < self.max_prompt_length < self.max_length, f"{name}.max_prompt_length",
                 "must be in (0, max_length)")
        _require(self.max_train_pairs is None or self.max_train_pairs >= 1, f"{name}.max_train_pairs",
                 "must be >= 1 or null")
        _require(self.max_heldout_pairs is None or self.max_heldout_pairs >= 1, f"{name}.max_heldout_pairs",
                 "must be >= 1 or null")
        _require(self.eval_batch_size >= 1, f"{name}.eval_batch_size", "must be >= 1")
        _require(self.max_steps == -1 or self.max_steps >= 1, f"{name}.max_steps", "must be -1 or >= 1")
        _require(self.save_steps >= 1, f"{name}.save_steps", "must be >= 1")
        _require(self.logging_steps >= 1, f"{name}.logging_steps", "must be >= 1")
        _require(self.threads >= 0, f"{name}.threads", "must be >= 0")
        _require(self.warmup_steps >= 0, f"{name}.warmup_steps", "must be >= 0")
        _require(self.weight_decay >= 0, f"{name}.weight_decay", "must be >= 0")
        _require(0 < self.adam_beta2 < 1, f"{name}.adam_beta2", "must be in (0, 1)")
        _require(self.max_grad_norm > 0, f"{name}.max_grad_norm", "must be > 0")
        # optimizer / lr_scheduler names are checked by transformers when the stage builds its
        # TRL config (importing it here would make every command slow); a bad name is one line there.
        self.lora.check()


@dataclass
class SFTConfig(TrainCommon):
    def check(self) -> None:
        self.check_common("sft")


@dataclass
class RMConfig(TrainCommon):
    init_from: str = "sft"                   # a stage name (sft, base) or a model directory path

    def check(self) -> None:
        self.check_common("rm")


@dataclass
class PPOConfig(TrainCommon):
    total_episodes: int = 64
    response_length: int = 32
    num_ppo_epochs: int = 1
    num_mini_batches: int = 1
    kl_coef: float = 0.05                    # the study's trlx init_kl_coef
    kl_estimator: Literal["k1", "k3"] = "k1"
    cliprange: float = 0.2
    cliprange_value: float = 0.2
    vf_coef: float = 0.1
    gamma: float = 1.0                       # the study's trlx gamma / lam
    lam: float = 0.95
    temperature: float = 0.7
    missing_eos_penalty: float = 1.0
    heldout_prompts: int = 16                # held-out prompts for the final reward comparison
    reward_model: str = "rm"                 # stage whose model scores the rollouts (and inits the value model)

    def check(self) -> None:
        self.check_common("ppo")
        _require(self.total_episodes >= self.batch_size * self.grad_accum, "ppo.total_episodes",
                 "must be >= ppo.batch_size * ppo.grad_accum")
        _require(self.response_length >= 1, "ppo.response_length", "must be >= 1")
        _require(self.max_prompt_length + self.response_length <= self.max_length, "ppo.response_length",
                 "max_prompt_length + response_length must be <= max_length")
        _require(self.kl_coef >= 0, "ppo.kl_coef", "must be >= 0")
        _require(self.temperature > 0, "ppo.temperature", "must be > 0")
        _require(self.num_ppo_epochs >= 1, "ppo.num_ppo_epochs", "must be >= 1")
        _require(self.num_mini_batches >= 1 and (self.batch_size * self.grad_accum) % self.num_mini_batches == 0,
                 "ppo.num_mini_batches", "must divide batch_size * grad_accum")
        _require(0 < self.cliprange and 0 < self.cliprange_value, "ppo.cliprange", "must be > 0")
        _require(0 < self.lam <= 1 and 0 < self.gamma <= 1, "ppo.gamma/lam", "must be in (0, 1]")
        _require(self.heldout_prompts >= 1, "ppo.heldout_prompts", "must be >= 1")


@dataclass
class DPOConfig(TrainCommon):
    beta: float = 0.1                        # the study's DPO code (eric-mitchell example) used 0.1
    loss_type: Literal["sigmoid", "ipo", "hinge"] = "sigmoid"   # sigmoid = the DPO paper's loss

    def check(self) -> None:
        self.check_common("dpo")
        _require(self.beta > 0, "dpo.beta", "must be > 0")


@dataclass
class EvalConfig:
    """Shared generation settings; each vertical's own entry lives under `verticals.<name>`
    (keys = that vertical's `Settings` dataclass in rlhf_trust/evals/<name>.py)."""

    models: list[str] = field(default_factory=lambda: ["base", "sft", "ppo", "dpo"])
    data_dir: str = "outputs/prepared"       # prepared JSONL dir (or any raw-layout dir)
    out_dir: str = "eval"                    # eval/<vertical>/<model>/{metrics.json,samples.jsonl}
    batch_size: int = 8
    device: Literal["auto", "cpu", "cuda", "mps"] = "auto"
    threads: int | Literal["auto"] = "auto"  # auto = every core this process may use; 0 = torch default
    seed: int = 0
    cache: str = "outputs/cache/generations.sqlite"   # "" = no cache
    bootstrap_samples: int = 1000
    verticals: dict[str, dict[str, Any]] = field(default_factory=dict)

    def check(self) -> None:
        _require(self.batch_size >= 1, "eval.batch_size", "must be >= 1")
        _require(self.threads == "auto" or self.threads >= 0, "eval.threads", "must be >= 0 or auto")
        _require(self.bootstrap_samples >= 100, "eval.bootstrap_samples", "must be >= 100")
        bad = [m for m in self.models if m not in ("base", "sft", "ppo", "dpo")]
        _require(not bad, "eval.models", f"unknown model stage(s) {bad}; use base, sft, ppo, dpo")
        from rlhf_trust import evals  # light: vertical modules import torch only when they run

        for name, entry in self.verticals.items():
            _require(name in evals.VERTICALS, f"eval.verticals.{name}",
                     f"unknown vertical (known: {', '.join(evals.VERTICALS)})")
            evals.settings(name, entry)


@dataclass
class InfluenceConfig:
    stages: list[str] = field(default_factory=lambda: ["sft", "rm", "dpo"])
    verticals: list[str] = field(default_factory=lambda: ["toxicity", "bias", "ethics", "truthfulness", "privacy"])
    max_train_pairs: int | None = None
    max_test_samples: int = 32
    layers: str = "all"                      # "all", "last:N" or a regex on module names
    grad_dtype: Literal["float32", "float16"] = "float32"
    shard_size: int = 256
    damping_scale: float = 0.1
    dpo_beta: float = 0.1
    exact_subsample: int = 64
    top_k: int = 5
    batch_size: int = 8
    max_length: int = 256
    device: Literal["auto", "cpu", "cuda", "mps"] = "auto"
    threads: int = 0
    svd_rank: int = 4                        # full fine-tunes -> LoRA by truncated SVD
    sft_test_loss: Literal["lm_contrast", "sft"] = "lm_contrast"  # "sft" = the study's NLL of the new text
    seed: int = 0

    def check(self) -> None:
        bad = [s for s in self.stages if s not in ("sft", "rm", "dpo")]
        _require(not bad, "influence.stages", f"unknown stage(s) {bad}; use sft, rm, dpo")
        from rlhf_trust.evals import VERTICALS as known  # the registry

        bad = [v for v in self.verticals if v not in known]
        _require(not bad, "influence.verticals", f"unknown vertical(s) {bad}; use {', '.join(known)}")
        _require(self.damping_scale > 0, "influence.damping_scale", "must be > 0")
        _require(self.dpo_beta > 0, "influence.dpo_beta", "must be > 0")
        _require(self.shard_size >= 1, "influence.shard_size", "must be >= 1")
        _require(self.batch_size >= 1, "influence.batch_size", "must be >= 1")
        _require(self.max_length >= 8, "influence.max_length", "must be >= 8")
        _require(self.max_test_samples >= 1, "influence.max_test_samples", "must be >= 1")
        _require(self.max_train_pairs is None or self.max_train_pairs >= 1, "influence.max_train_pairs",
                 "must be >= 1 or null")
        _require(self.exact_subsample >= 3, "influence.exact_subsample", "must be >= 3 (a rank correlation)")
        _require(self.top_k >= 1, "influence.top_k", "must be >= 1")
        _require(self.svd_rank >= 1, "influence.svd_rank", "must be >= 1")
        _require(bool(self.layers.strip()), "influence.layers", "must be all, last:N or a regex")
        _require(self.threads >= 0, "influence.threads", "must be >= 0")


@dataclass
class CurateConfig:
    """`rlhf-trust curate` (data/curate.py): the HH training set the training stages read. Off =
    the prepared set passed through byte for byte; on = pairs dropped by their influence scores."""

    enabled: bool = False
    mode: Literal["drop_harmful", "keep_helpful"] = "drop_harmful"
    stages: list[str] = field(default_factory=lambda: ["dpo"])          # influence stages whose scores count
    verticals: list[str] = field(default_factory=lambda: ["toxicity"])
    harmful: Literal["auto", "toward_change", "against_change"] = "auto"  # which score sign hurts trust
    top_k: int | None = 8                      # drop_harmful: how many (or top_fraction of the set)
    top_fraction: float | None = None
    within_first: int | None = None            # only the first N pairs are candidates (= what a stage trains on)
    scores_dir: str = "influence"              # the earlier run's influence/<stage>/<vertical>/scores.parquet
    summary: str = "reports/trust_summary.json"   # harmful: auto reads each stage's contrast here

    def check(self) -> None:
        bad = [s for s in self.stages if s not in ("sft", "rm", "dpo")]
        _require(not bad and bool(self.stages), "curate.stages", f"unknown or no stage(s) {bad}; use sft, rm, dpo")
        _require(bool(self.verticals), "curate.verticals", "must name at least one vertical")
        _require(self.top_k is None or self.top_k >= 1, "curate.top_k", "must be >= 1 or null")
        _require(self.top_fraction is None or 0 < self.top_fraction < 1, "curate.top_fraction", "must be in (0, 1)")
        _require(self.within_first is None or self.within_first >= 1, "curate.within_first", "must be >= 1 or null")
        _require(self.mode != "drop_harmful" or (self.top_k is None) != (self.top_fraction is None),
                 "curate.top_k", "drop_harmful needs exactly one of top_k and top_fraction")


@dataclass
class ReportConfig:
    out_dir: str = "reports"
    top_k: int = 3

    def check(self) -> None:
        _require(self.top_k >= 0, "report.top_k", "must be >= 0")


SECTIONS: dict[str, type] = {
    "data": DataConfig,
    "prepare": PrepareConfig,
    "validate": ValidateConfig,
    "model": ModelConfig,
    "sft": SFTConfig,
    "rm": RMConfig,
    "ppo": PPOConfig,
    "dpo": DPOConfig,
    "eval": EvalConfig,
    "influence": InfluenceConfig,
    "curate": CurateConfig,
    "report": ReportConfig,
}


# ----------------------------------------------------------------------------------------------
# Loading and validation
# ----------------------------------------------------------------------------------------------
def _require(ok: bool, key: str, problem: str) -> None:
    if not ok:
        raise ConfigError(f"params: {key}: {problem}")


def read_params(path: str | Path = DEFAULT_PARAMS) -> dict[str, Any]:
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
    unknown = sorted(set(raw) - set(SECTIONS))
    if unknown:
        raise ConfigError(f"params: unknown section '{unknown[0]}' (known: {', '.join(SECTIONS)})")
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


def section(name: str, raw: dict[str, Any]) -> Any:
    cfg = build(SECTIONS[name], raw.get(name), name)
    cfg.check()
    return cfg


def load_all(path: str | Path = DEFAULT_PARAMS) -> dict[str, Any]:
    """Validate every section (cheap) so a typo anywhere is caught before any work starts."""
    raw = read_params(path)
    return {name: section(name, raw) for name in SECTIONS}


def load(name: str, path: str | Path = DEFAULT_PARAMS) -> Any:
    """The validated config of one stage's section (the whole file is validated too)."""
    return load_all(path)[name]


def params_hash(cfg: Any) -> str:
    """Stable short hash of a section (goes into MLflow tags and cache keys)."""
    blob = json.dumps(dataclasses.asdict(cfg), sort_keys=True, default=str)
    return hashlib.sha256(blob.encode()).hexdigest()[:16]


def as_flat_dict(cfg: Any, prefix: str = "") -> dict[str, Any]:
    out: dict[str, Any] = {}
    for k, v in dataclasses.asdict(cfg).items():
        key = f"{prefix}{k}"
        if isinstance(v, dict):
            for k2, v2 in _flatten(v, key + ".").items():
                out[k2] = v2
        else:
            out[key] = v
    return out


def _flatten(d: dict, prefix: str) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for k, v in d.items():
        if isinstance(v, dict):
            out.update(_flatten(v, f"{prefix}{k}."))
        else:
            out[f"{prefix}{k}"] = v
    return out
