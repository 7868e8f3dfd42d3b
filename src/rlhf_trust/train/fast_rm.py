"""TRL's RewardTrainer with each pair's shared prompt run through the network once.

Why hand-written: TRL 1.12's reward collator stacks prompt + chosen and prompt + rejected as two
full sequences, so the prompt (about two thirds of an HH pair's tokens here) goes through the
transformer twice, forward and backward; TRL has no option to share it. Here the common token
prefix of the two sequences runs once and both continuations run on its KV cache (gradients flow
into the prefix from both; train/prefix_once.py); the reward is the score head on each sequence's
last token, as the sequence classifier pools it. Loss and metrics are TRL's own on the same
rewards (tests: loss and gradients equal TRL's path within 1e-4). Batches it does not fit
(margins, one token sequences) run TRL's `compute_loss` unchanged.
"""

from __future__ import annotations

from typing import Any


def _common_prefix(a: Any, b: Any) -> int:
    n = min(len(a), len(b))
    diff = (a[:n] != b[:n]).nonzero()
    return int(diff[0]) if len(diff) else n


def shared_prefix_rewards(model: Any, inputs: dict) -> Any:
    """Rewards (2B,) of a TRL reward batch ([chosen rows; rejected rows], right-padded), each pair's
    common prefix run once; None when the model has no decoder + `score` split."""
    import torch

    from rlhf_trust.models.fused_head import decoder_of
    from rlhf_trust.train.prefix_once import prefix_once

    parts = decoder_of(model)
    score = getattr(parts[0], "score", None) if parts else None
    ids, mask = inputs["input_ids"], inputs["attention_mask"]
    b = ids.shape[0] // 2
    if score is None or ids.shape[0] != 2 * b or b == 0:
        return None
    decoder = parts[1]
    lens = mask.sum(1)
    # keep >= 1 token after the prefix on each side: its hidden state is the one the score reads
    pre = [min(_common_prefix(ids[i, :lens[i]], ids[b + i, :lens[b + i]]), int(lens[i]) - 1,
               int(lens[b + i]) - 1) for i in range(b)]
    if min(pre) < 1:
        return None
    rows = [i // 2 + (i % 2) * b for i in range(2 * b)]  # interleaved: chosen 0, rejected 0, chosen 1, ...
    c = prefix_once(decoder, [ids[i, :n] for i, n in enumerate(pre)],
                    [ids[r, pre[r % b]:int(lens[r])] for r in rows])
    last = c.hidden[torch.arange(2 * b, device=ids.device), c.mask.sum(1) - 1]  # each sequence's last token
    rewards = score(last).squeeze(-1)
    order = torch.tensor(rows, device=ids.device).argsort()  # back to [chosen; rejected]
    return rewards[order]


def trainer_class():
    """A RewardTrainer subclass (built lazily: importing TRL takes seconds)."""
    import torch
    from torch import nn
    from trl import RewardTrainer

    class FastRewardTrainer(RewardTrainer):
        def compute_loss(self, model, inputs, return_outputs=False, num_items_in_batch=None):
            fits = not return_outputs and "margin" not in inputs and self.args.center_rewards_coefficient is None
            rewards = shared_prefix_rewards(self.accelerator.unwrap_model(model), inputs) if fits else None
            if rewards is None:
                return super().compute_loss(model, inputs, return_outputs, num_items_in_batch)
            chosen, rejected = torch.chunk(rewards, chunks=2)
            loss = -nn.functional.logsigmoid(chosen - rejected).mean()
            mode = "train" if self.model.training else "eval"
            if mode == "train":
                n = self.accelerator.gather_for_metrics(inputs["attention_mask"].sum()).sum().item()
                self._total_train_tokens += n
            self._metrics[mode]["num_tokens"] = [self._total_train_tokens]
            with torch.no_grad():  # TRL's own metrics
                g = self.accelerator.gather(rewards.detach())
                self._metrics[mode]["min_reward"].append(g.min().item())
                self._metrics[mode]["mean_reward"].append(g.mean().item())
                self._metrics[mode]["max_reward"].append(g.max().item())
                acc = self.accelerator.gather_for_metrics((chosen > rejected).float().mean()).mean().item()
                self._metrics[mode]["accuracy"].append(acc)
                margin = self.accelerator.gather_for_metrics((chosen - rejected).mean()).mean()
                self._metrics[mode]["margin"].append(margin.item())
            return loss

    return FastRewardTrainer
