"""The TRL and peft settings every training stage shares: its LoRA config and its TRL arguments."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from rlhf_trust.errors import ConfigError
from rlhf_trust.train.runtime import use_cpu


def lora_config(cfg: Any, task: str):
    """peft LoraConfig on all linear layers (None = full fine-tuning)."""
    if not cfg.lora.enabled:
        return None
    from peft import LoraConfig

    return LoraConfig(r=cfg.lora.r, lora_alpha=cfg.lora.alpha, lora_dropout=cfg.lora.dropout,
                      target_modules=cfg.lora.target_modules, task_type=task, bias="none")


def trl_args(config_cls: type, cfg: Any, out_dir: Path, stage: str, **extra: Any):
    """TRL config with the settings every stage shares (seeded, MLflow logging, checkpoints)."""
    try:
        args = _trl_config(config_cls, cfg, out_dir, stage, extra)
    except ValueError as e:  # e.g. an unknown optimizer or scheduler name
        raise ConfigError(f"params: {stage}: {str(e).splitlines()[0]}") from None
    _ = args.device  # sets up torch.distributed now under `accelerate launch` (see barrier())
    return args


def _trl_config(config_cls: type, cfg: Any, out_dir: Path, stage: str, extra: dict):
    return config_cls(**{
        "output_dir": str(out_dir), "run_name": stage, "seed": cfg.seed, "data_seed": cfg.seed,
        "learning_rate": cfg.learning_rate, "num_train_epochs": cfg.epochs, "max_steps": cfg.max_steps,
        "per_device_train_batch_size": cfg.batch_size, "per_device_eval_batch_size": cfg.eval_batch_size,
        "gradient_accumulation_steps": cfg.grad_accum, "logging_steps": cfg.logging_steps,
        "logging_first_step": True, "save_strategy": "steps", "save_steps": cfg.save_steps, "save_total_limit": 1,
        "report_to": ["mlflow"], "use_cpu": use_cpu(cfg),
        # CPU bf16 is `mixed_precision`'s autocast around compute_loss: TRL's bf16=True would also make
        # accelerate wrap model.forward in autocast for good, held-out passes included
        "bf16": cfg.precision == "bfloat16" and not use_cpu(cfg),
        "fp16": cfg.precision == "float16", "activation_checkpointing": cfg.gradient_checkpointing,
        "dataloader_num_workers": 0, "disable_tqdm": False, "optim": cfg.optimizer,
        "lr_scheduler_type": cfg.lr_scheduler, "warmup_steps": cfg.warmup_steps, "weight_decay": cfg.weight_decay,
        "adam_beta2": cfg.adam_beta2, "max_grad_norm": cfg.max_grad_norm, **extra,
    })
