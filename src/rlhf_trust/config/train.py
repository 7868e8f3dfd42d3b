"""Params sections of the training stages (rlhf_trust/train/): `sft`, `rm` and the alignment arms
(`ppo`, `dpo`, `kto`, `orpo`, `simpo`, `grpo`, `rloo`), which share `TrainCommon` and its `lora` block, and
`train`, the arms a run trains (train/arms.py) and the training seeds each arm is trained with."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal

from rlhf_trust.config.schema import require as _require


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
    seed: int = 0                            # set per run from train.seeds (`rlhf-trust <stage> --seed k`)
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
    threads: int | Literal["auto"] = "auto"  # auto = the cores not busy elsewhere; 0 = torch default
    # mixed precision: fp32 master weights, bf16 autocast (CPU: AMX; GPU: TRL's bf16); train/precision.autocast
    precision: Literal["float32", "bfloat16", "float16"] = "float32"
    heldout_precision: Literal["float32", "bfloat16"] = "float32"  # the held-out metric passes
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
        _require(self.threads == "auto" or self.threads >= 0, f"{name}.threads", "must be >= 0 or auto")
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
    missing_eos_penalty: float = 0.0         # the study's trlx PPO has none (TRL suggests 1.0)
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
class TrainArmsConfig:
    """`train`: which alignment arms the pipeline trains, evaluates and attributes (train/arms.py)."""

    arms: list[str] = field(default_factory=lambda: ["ppo", "dpo"])   # the study's two; kto orpo simpo grpo rloo opt-in
    # Each seed trains its own chain sft -> rm -> ppo, sft -> dpo (outputs/models/<stage>/s<k>); a seed sets
    # every source of training randomness: data order, adapter initialisation, dropout, PPO's prompt
    # schedule and sampling, the held-out bootstrap.
    seeds: list[int] = field(default_factory=lambda: [0, 1, 2])

    def check(self) -> None:
        # names are checked against the arm registry by `rlhf_trust.train.arms.selected` (the
        # registry lives above config); here only the shape
        _require(len(self.arms) >= 1, "train.arms", "must name at least one arm")
        _require(len(set(self.arms)) == len(self.arms), "train.arms", "names an arm twice")
        _require(len(self.seeds) >= 1, "train.seeds", "must list at least one seed, got []")
        dup = sorted({s for s in self.seeds if self.seeds.count(s) > 1})
        _require(not dup, "train.seeds", f"must not repeat a seed, got {dup} twice")
        _require(all(s >= 0 for s in self.seeds), "train.seeds", f"must be >= 0, got {self.seeds}")


@dataclass
class KTOConfig(TrainCommon):
    beta: float = 0.1                        # TRL's and the KTO paper's default
    desirable_weight: float = 1.0            # HH gives one desirable and one undesirable example per pair
    undesirable_weight: float = 1.0

    def check(self) -> None:
        self.check_common("kto")
        _require(self.beta > 0, "kto.beta", "must be > 0")
        _require(self.desirable_weight > 0 and self.undesirable_weight > 0, "kto.desirable_weight",
                 "desirable_weight and undesirable_weight must be > 0")
        # TRL estimates KTO's reference point from mismatched completions within a micro-batch
        _require(self.batch_size >= 2, "kto.batch_size", "must be >= 2 (KTO's KL estimate needs two examples)")


@dataclass
class ORPOConfig(TrainCommon):
    beta: float = 0.1                        # lambda of the ORPO paper: weight of the odds-ratio term

    def check(self) -> None:
        self.check_common("orpo")
        _require(self.beta > 0, "orpo.beta", "must be > 0")


@dataclass
class SimPOConfig(TrainCommon):
    beta: float = 2.0                        # the SimPO paper's beta and gamma (TRL CPO defaults 0.1 / 0.5)
    gamma: float = 0.5                       # target reward margin (TRL's simpo_gamma)

    def check(self) -> None:
        self.check_common("simpo")
        _require(self.beta > 0, "simpo.beta", "must be > 0")
        _require(self.gamma >= 0, "simpo.gamma", "must be >= 0")


@dataclass
class GroupRLConfig(TrainCommon):
    """GRPO and RLOO: online arms whose baseline is the other completions of the same prompt."""

    num_generations: int = 4                 # completions per prompt: the group whose rewards make the baseline
    response_length: int = 32                # max completion tokens
    kl_coef: float = 0.05                    # TRL's beta (KL to the SFT reference); 0 drops the reference
    temperature: float = 0.7
    heldout_prompts: int = 16                # held-out prompts for the reward gain over SFT
    reward_model: str = "rm"                 # stage whose model scores the completions

    def check_group(self, name: str) -> None:
        self.check_common(name)
        _require(self.num_generations >= 2, f"{name}.num_generations", "must be >= 2 (the group baseline)")
        _require((self.batch_size * self.grad_accum) % self.num_generations == 0, f"{name}.num_generations",
                 f"must divide {name}.batch_size * {name}.grad_accum")
        _require(self.response_length >= 1, f"{name}.response_length", "must be >= 1")
        _require(self.max_prompt_length + self.response_length <= self.max_length, f"{name}.response_length",
                 "max_prompt_length + response_length must be <= max_length")
        _require(self.kl_coef >= 0, f"{name}.kl_coef", "must be >= 0")
        _require(self.temperature > 0, f"{name}.temperature", "must be > 0")
        _require(self.heldout_prompts >= 1, f"{name}.heldout_prompts", "must be >= 1")


@dataclass
class GRPOConfig(GroupRLConfig):
    def check(self) -> None:
        self.check_group("grpo")


@dataclass
class RLOOConfig(GroupRLConfig):
    def check(self) -> None:
        self.check_group("rloo")
