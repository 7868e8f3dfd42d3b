"""`rlhf-trust ppo`: PPO from the SFT policy against the reward model (TRL 1.12 experimental PPOTrainer).

Memory: with LoRA (default) the reference policy is the SFT network with the adapter disabled and
the value model is the reward model's network with its own LoRA adapter and a trainable head, so
three transformer copies are held (policy, value, reward) instead of four full ones.

Resume: TRL's PPOTrainer restarts from update 0 and its Trainer checkpoints hold only the policy,
so this module saves its own checkpoint every `save_steps` updates: the trainable parameters of
policy and value model, the optimiser state, the RNG states and the log history. The prompt
order is fixed up front (a seeded schedule), so a resumed run sees exactly the prompts, random
numbers and optimiser state the uninterrupted run would have seen.
"""

from __future__ import annotations

import contextlib
import math
import os
import random
import shutil
from pathlib import Path
from typing import Any

from rlhf_trust import fileio
from rlhf_trust.errors import UserError
from rlhf_trust.train import checkpoints, inputs, monitor, precision, runtime, stage_cli, trl_setup
from rlhf_trust.train.response_logits import response_logits_only

STAGE = "ppo"
STATE_FILE = "ppo_state.pt"


def run(cfg, layout: inputs.Layout | None = None, callbacks: list | None = None) -> dict:
    import torch
    from datasets import Dataset
    from torch.utils.data import DataLoader
    from trl.experimental.ppo import PPOConfig, PPOTrainer

    from rlhf_trust.models import load_merged_causal_lm, load_merged_seq_cls, load_tokenizer

    layout = layout or inputs.Layout()
    inp = inputs.stage_inputs(STAGE, cfg, layout)
    rm_dir = inputs.parent_dir(STAGE, layout, cfg.reward_model)
    tok = load_tokenizer(inp.parent, padding_side="left")
    prompts = list(dict.fromkeys(r["prompt"] for r in inp.train))
    ckpt_dir = layout.checkpoints(STAGE)
    args = trl_setup.trl_args(
        PPOConfig, cfg, ckpt_dir, STAGE, num_ppo_epochs=cfg.num_ppo_epochs,
        num_mini_batches=cfg.num_mini_batches, local_rollout_forward_batch_size=cfg.batch_size,
        response_length=cfg.response_length, stop_token="eos", temperature=cfg.temperature,
        kl_coef=cfg.kl_coef, kl_estimator=cfg.kl_estimator, cliprange=cfg.cliprange,
        cliprange_value=cfg.cliprange_value, vf_coef=cfg.vf_coef, gamma=cfg.gamma, lam=cfg.lam,
        missing_eos_penalty=cfg.missing_eos_penalty, num_sample_generations=0, save_strategy="no",
        lr_scheduler_type="constant",  # the study's cosine had eta_min = lr (constant); also resume-safe
    )
    # one update consumes batch_size * grad_accum prompts on every process
    world = int(os.environ.get("WORLD_SIZE", "1"))
    per_update = cfg.batch_size * cfg.grad_accum * world
    updates = math.ceil(cfg.total_episodes / per_update)
    order = schedule(len(prompts), updates * per_update, cfg.seed)
    fp = checkpoints.fingerprint(cfg, {"data": inp.data_md5, "parent": checkpoints.model_md5(inp.parent),
                                  "reward": checkpoints.model_md5(rm_dir), "world_size": world})
    last = checkpoints.checkpoint_to_resume(ckpt_dir, fp, cfg.resume)
    state = load_state(Path(last)) if last else None
    done = state["update"] if state else 0

    policy = load_merged_causal_lm(inp.parent)
    reward = load_merged_seq_cls(rm_dir).requires_grad_(False).eval()
    value = value_model(rm_dir, cfg)
    ids = [tok(prompts[i])["input_ids"] for i in order[done * per_update:]]
    dataset = Dataset.from_dict({"input_ids": ids})
    args.total_episodes = len(ids)
    trainer = PPOTrainer(args=args, processing_class=tok, model=policy, ref_model=None, reward_model=reward,
                         value_model=value, train_dataset=dataset, peft_config=trl_setup.lora_config(cfg, "CAUSAL_LM"),
                         callbacks=[monitor.nan_guard(STAGE), checkpointer(ckpt_dir, done, updates, cfg.save_steps,
                                                                           state)] + list(callbacks or []))
    # The prompt schedule replaces TRL's shuffled loader (fixed order -> exact resume).
    # Its own generator: creating the loader's iterator must not draw from the global RNG, or a
    # resumed run's sampling would be one draw off the uninterrupted run's.
    trainer.dataloader = trainer.accelerator.prepare(DataLoader(
        dataset, batch_size=cfg.batch_size * cfg.grad_accum, shuffle=False, collate_fn=trainer.data_collator, drop_last=True,
        generator=torch.Generator().manual_seed(cfg.seed)))
    if hasattr(trainer.model, "module"):
        # TRL 1.12 reads `self.model.policy` through the DDP wrapper (reference log-probs with the
        # adapter disabled), which fails under `accelerate launch`; expose the policy on the
        # wrapper without registering it as a second submodule.
        object.__setattr__(trainer.model, "policy", trainer.accelerator.unwrap_model(trainer.model).policy)
    if state:
        restore(trainer, state)
    checkpoints.quiet_progress(trainer)
    # TRL's PPO loop generates with the unwrapped policy and scores outside the prepared forward,
    # so the whole loop runs under autocast (bf16 matmuls, fp32 weights; no-op for float32), the
    # frozen Linear weights as bf16 copies for the duration (train/frozen_bf16.py); the policy's LM head
    # runs on response positions only (train/response_logits.py)
    with precision.autocast(cfg), precision.frozen_weights(cfg, trainer.model, reward), \
            response_logits_only(trainer.accelerator.unwrap_model(trainer.model).policy, cfg.response_length):
        trainer.train()

    policy = trainer.accelerator.unwrap_model(trainer.model).policy
    history = (state["log_history"] if state else []) + list(trainer.state.log_history)
    metrics = {**rollout_metrics(history), **monitor.count_params(policy),
               "updates": updates, "episodes": updates * per_update, "train_prompts": len(prompts),
               "train_tokens": sum(len(tok(prompts[i])["input_ids"]) + cfg.response_length for i in order),
               "resumed_from_update": done}
    # scored as saved: merged LoRA, in heldout_precision (heldout_metrics)
    metrics.update(heldout_metrics(policy, reward, tok, inp.heldout, cfg, inp.parent))
    checkpoints.save_model_dir(policy, load_tokenizer(inp.parent), layout.model(STAGE), stage=STAGE,
                          task="causal_lm", parent=inp.parent, data_md5=inp.data_md5, cfg=cfg,
                          extra={"reward_model_dir": str(rm_dir.resolve())})
    checkpoints.discard_checkpoints(ckpt_dir)
    return metrics


def schedule(n_prompts: int, n_episodes: int, seed: int) -> list[int]:
    """Prompt index per episode: seeded permutations of the prompts, concatenated."""
    rng = random.Random(seed)
    order: list[int] = []
    while len(order) < n_episodes:
        perm = list(range(n_prompts))
        rng.shuffle(perm)
        order += perm
    return order[:n_episodes]


def value_model(rm_dir: Path, cfg: Any):
    """The critic, initialised from the reward model. With LoRA: its own adapter + trainable head."""
    from rlhf_trust.models import load_merged_seq_cls

    value = load_merged_seq_cls(rm_dir)
    if not cfg.lora.enabled:
        return value
    from peft import get_peft_model

    # PEFT injects the LoRA layers in place; TRL's PolicyAndValueWrapper needs the plain model
    # (it reads `value.<base_model_prefix>` and `value.score`), so hand it the wrapped model.
    return get_peft_model(value, trl_setup.lora_config(cfg, "SEQ_CLS")).base_model.model


# ------------------------------------------------------------------------------------------ resume
def _trainable(module) -> dict[str, Any]:
    return {n: p.detach().cpu().clone() for n, p in module.named_parameters() if p.requires_grad}


def _rng_state() -> dict:
    """Every RNG state as tensors and plain Python values, so that it loads with
    `torch.load(weights_only=True)`: a checkpoint is data, never code."""
    import numpy as np
    import torch

    kind, keys, pos, has_gauss, gauss = np.random.get_state()
    version, mt, py_gauss = random.getstate()
    st = {"torch": torch.get_rng_state(),
          "numpy": {"kind": str(kind), "keys": torch.from_numpy(keys.astype(np.int64)), "pos": int(pos),
                    "has_gauss": int(has_gauss), "cached_gaussian": float(gauss)},
          "python": {"version": int(version), "state": torch.tensor(mt, dtype=torch.int64),
                     "gauss": py_gauss if py_gauss is None else float(py_gauss)}}
    if torch.cuda.is_available():
        st["cuda"] = torch.cuda.get_rng_state_all()
    return st


def _set_rng_state(rng: dict) -> None:
    import numpy as np
    import torch

    torch.set_rng_state(rng["torch"])
    n = rng["numpy"]
    np.random.set_state((n["kind"], n["keys"].numpy().astype(np.uint32), n["pos"], n["has_gauss"],
                         n["cached_gaussian"]))
    py = rng["python"]
    random.setstate((py["version"], tuple(int(x) for x in py["state"].tolist()), py["gauss"]))
    if "cuda" in rng and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(rng["cuda"])


def restore(trainer, state: dict) -> None:
    """Put trainable weights, optimiser state and RNG states back as they were after `update`."""
    import torch

    wrapper = trainer.accelerator.unwrap_model(trainer.model)
    for module, key in ((wrapper.policy, "policy"), (wrapper.value_model, "value")):
        missing = set(state[key]) - {n for n, _ in module.named_parameters()}
        if missing:
            raise UserError(f"{STAGE}: checkpoint does not match the model ({sorted(missing)[:2]})")
        with torch.no_grad():
            params = dict(module.named_parameters())
            for n, t in state[key].items():
                params[n].copy_(t)
    trainer.optimizer.load_state_dict(state["optimizer"])
    _set_rng_state(state["rng"])


def load_state(ckpt: Path) -> dict:
    """A PPO checkpoint: shared state from rank 0 plus this process's own RNG states.

    Tensors and plain types only (`weights_only=True`): a crafted pickle in a checkpoint is refused,
    never run."""
    import torch

    state = torch.load(ckpt / STATE_FILE, weights_only=True)
    state["rng"] = torch.load(ckpt / f"rng-{os.environ.get('RANK', '0')}.pt", weights_only=True)
    return state


def checkpointer(ckpt_dir: Path, done: int, total: int, every: int, previous: dict | None):
    """TrainerCallback saving the PPO state every `every` updates (never after the last one)."""
    import torch
    from transformers import TrainerCallback

    class _Checkpointer(TrainerCallback):
        def on_step_end(self, args, state, control, model=None, optimizer=None, **kwargs):
            update = done + state.global_step
            if update % every or update >= total:
                return
            target = Path(ckpt_dir) / f"checkpoint-{update}"
            if state.is_world_process_zero:  # DDP keeps the weights and optimiser identical on every rank
                wrapper = model.module if hasattr(model, "module") else model
                blob = {"update": update, "policy": _trainable(wrapper.policy),
                        "value": _trainable(wrapper.value_model), "optimizer": optimizer.state_dict(),
                        "log_history": (previous["log_history"] if previous else []) + list(state.log_history)}
                with fileio.atomic_path(target) as tmp:
                    tmp.mkdir()
                    torch.save(blob, tmp / STATE_FILE)
            runtime.barrier()
            with fileio.atomic_path(target / f"rng-{os.environ.get('RANK', '0')}.pt") as tmp:
                torch.save(_rng_state(), tmp)  # sampling RNG differs per rank
            runtime.barrier()
            if state.is_world_process_zero:
                for old in Path(ckpt_dir).glob("checkpoint-*"):
                    if old.name != target.name:
                        shutil.rmtree(old, ignore_errors=True)

    return _Checkpointer()


# ------------------------------------------------------------------------------------------ metrics
def rollout_metrics(history: list[dict]) -> dict:
    """Mean/last reward-model score and KL to the reference over the PPO updates."""
    rows = [h for h in history if "objective/scores" in h]
    if not rows:
        raise UserError(f"{STAGE}: no PPO update ran")
    out = {}
    for key, name in (("objective/scores", "reward"), ("objective/kl", "kl"), ("objective/rlhf_reward", "rlhf_reward"),
                      ("loss/policy_avg", "policy_loss"), ("loss/value_avg", "value_loss")):
        vals = [float(h[key]) for h in rows if key in h]
        if any(not math.isfinite(v) for v in vals):
            raise UserError(f"{STAGE}: {key} is not finite; lower ppo.learning_rate or check the data")
        out[f"{name}_mean"] = sum(vals) / len(vals)
        out[f"{name}_last"] = vals[-1]
    return out


def generate_and_score(policy, reward, tok, prompts: list[str], cfg) -> Any:
    """Greedy responses (cut at EOS) to `prompts`, scored by the reward model like PPO's rollouts."""
    import torch
    from transformers import GenerationConfig
    from trl.experimental.ppo.ppo_trainer import batch_generation, truncate_response
    from trl.experimental.utils import get_reward

    device = next(policy.parameters()).device
    gen = GenerationConfig(max_new_tokens=cfg.response_length, do_sample=False, eos_token_id=tok.eos_token_id,
                           pad_token_id=tok.pad_token_id)
    scores = []
    was_training = policy.training
    policy.eval()
    for i in range(0, len(prompts), cfg.eval_batch_size):
        q = tok(prompts[i:i + cfg.eval_batch_size], return_tensors="pt", padding=True)["input_ids"].to(device)
        with torch.no_grad():
            qr, _ = batch_generation(policy, q, q.shape[0], tok.pad_token_id, gen)
            resp = truncate_response(tok.eos_token_id, tok.pad_token_id, qr[:, q.shape[1]:])
            _, score, _ = get_reward(reward, torch.cat((q, resp), 1), tok.pad_token_id, q.shape[1])
        scores.append(score.float().cpu())
    policy.train(was_training)
    return torch.cat(scores)


def heldout_metrics(policy, reward, tok, rows: list[dict], cfg, sft_dir: Path) -> dict:
    """Reward of the final policy vs the SFT policy on held-out prompts (same greedy decoding), each
    scored in `cfg.heldout_precision` by `_scored` (call it outside any autocast).

    A LoRA policy is scored as it is saved and loaded (`load_merged_causal_lm`): adapter merged into
    the fp32 weights, so scoring the saved models gives the same numbers.
    In bf16 an unmerged adapter (base and LoRA products rounded apart) decodes differently from the
    merged weights (greedy flips near ties: +0.185 vs +0.300 on the same 128 prompts)."""
    prompts = list(dict.fromkeys(r["prompt"] for r in rows))[: cfg.heldout_prompts]
    if hasattr(policy, "disable_adapter"):  # LoRA: the SFT policy is the adapter-disabled network
        with policy.disable_adapter():
            sft = _scored(policy, reward, tok, prompts, cfg)
        with merged_adapter(policy):
            final = _scored(policy, reward, tok, prompts, cfg)
    else:
        from rlhf_trust.models import load_merged_causal_lm

        final = _scored(policy, reward, tok, prompts, cfg)
        sft = _scored(load_merged_causal_lm(sft_dir).to(next(policy.parameters()).device),
                      reward, tok, prompts, cfg)
    from rlhf_trust.train.scoring import mean_ci95

    gain = final - sft  # per held-out prompt: the bootstrap unit
    return {"heldout_prompts": len(prompts), "heldout_n": len(prompts), "heldout_reward_policy": float(final.mean()),
            "heldout_reward_sft": float(sft.mean()), "heldout_reward_gain": float(gain.mean()),
            "heldout_reward_gain_ci95": mean_ci95(gain.numpy(), cfg.seed)}


def _scored(policy, reward, tok, prompts: list[str], cfg) -> Any:
    """`generate_and_score` in `cfg.heldout_precision` (bf16: frozen weights as bf16 copies).

    One precision context per model: a policy whose weights change in place between passes (the
    merge) must be swapped after the change, and autocast keeps its cast cache until its outermost
    context closes."""
    with precision.heldout_autocast(cfg, policy, reward):
        return generate_and_score(policy, reward, tok, prompts, cfg)


@contextlib.contextmanager
def merged_adapter(policy):
    """The LoRA adapter merged into `policy`'s weights as `PeftModel.merge_and_unload` (the loader)
    merges it: in fp32, outside autocast (whose bf16 matmul would round the delta). Unmerged on exit
    (the base weights come back within fp32 rounding; the saved adapter is unaffected)."""
    import torch

    with torch.autocast("cpu", enabled=False), torch.no_grad():
        policy.merge_adapter()
    try:
        yield policy
    finally:
        with torch.autocast("cpu", enabled=False), torch.no_grad():
            policy.unmerge_adapter()


def cli(args) -> int:
    return stage_cli.run_cli(STAGE, args, run, lambda layout: [layout.split("hh_train"), layout.split("hh_heldout"),
                                                               layout.model("sft"), layout.model("rm")])
