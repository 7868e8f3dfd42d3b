"""TRL's DPOTrainer with the LM head run only on completion tokens (the chunked head of
models/fused_head.py) for the policy and the reference pass.

Why hand-written: TRL 1.12's DPO computes `model(...).logits` for every position of prompt and
both responses, twice (policy with gradient, reference without), and its `padding_free` option is
disabled in this release; at gemma-3's 262k vocabulary those (tokens x vocab) tensors cost more than
the transformer. Here the decoder runs once per pass and log p(token) is formed chunk by chunk for
the completion tokens only; the loss is TRL's sigmoid DPO loss on the same per-sequence log-probs
(tests: loss and gradients equal TRL's own path within 1e-4). Anything this path does not cover
(other loss types, length-desensitised or weighted DPO, MoE aux loss, a trainable LM head) runs
TRL's own `_compute_loss` unchanged.
"""

from __future__ import annotations

from typing import Any


def completion_logps(model: Any, inputs: dict) -> Any:
    """Per-sequence sum of log p(completion tokens) for a DPO batch ([chosen; rejected] rows),
    or None when `model` has no plain decoder + frozen Linear head split."""
    import torch

    from rlhf_trust.models.fused_head import split_head, token_logps

    parts = split_head(model)
    if parts is None or parts[1].weight.requires_grad:
        return None
    decoder, head, softcap = parts
    shared = _shared_prompt_logps(decoder, head, softcap, inputs)
    if shared is not None:
        return shared
    ids, mask = inputs["input_ids"], inputs["attention_mask"]
    hidden = decoder(input_ids=ids, attention_mask=mask, use_cache=False).last_hidden_state
    keep = inputs["completion_mask"][:, 1:].bool()  # position t predicts token t + 1
    rows = torch.arange(ids.shape[0], device=ids.device)[:, None].expand_as(keep)[keep]
    lp = token_logps(hidden[:, :-1][keep], head.weight, head.bias, ids[:, 1:][keep], softcap)
    return torch.zeros(ids.shape[0], dtype=lp.dtype, device=lp.device).index_add(0, rows, lp)


def _shared_prompt_logps(decoder: Any, head: Any, softcap: Any, inputs: dict) -> Any:
    """`completion_logps` with each pair's prompt run through the decoder once (train/prefix_once.py):
    the chosen and the rejected completion both continue from its KV cache. HH prompts are about two
    thirds of a pair's tokens, so a batch passes ~140 instead of ~200 tokens per pair through the
    decoder. None when the batch is not TRL's [chosen rows; rejected rows] layout with identical
    prompts (then the caller runs the plain path).
    """
    import torch

    from rlhf_trust.train.prefix_once import continuation_logps

    ids, mask, comp = inputs["input_ids"], inputs["attention_mask"], inputs["completion_mask"].bool()
    b = ids.shape[0] // 2
    n_prompt = (mask.bool() & ~comp).sum(1)
    n_comp = comp.sum(1)
    if ids.shape[0] != 2 * b or not torch.equal(n_prompt[:b], n_prompt[b:]) or int(n_comp.min()) < 1:
        return None
    for i in range(b):
        n = int(n_prompt[i])
        if not (n >= 1 and torch.equal(ids[i, :n], ids[b + i, :n]) and bool(comp[i, n:n + int(n_comp[i])].all())
                and bool(comp[b + i, n:n + int(n_comp[b + i])].all())):
            return None
    rows = [i // 2 + (i % 2) * b for i in range(2 * b)]  # interleaved: chosen 0, rejected 0, chosen 1, ...
    spans = [(int(n_prompt[r]), int(n_prompt[r] + n_comp[r])) for r in rows]
    lp = continuation_logps(decoder, head, softcap, [ids[i, :int(n_prompt[i])] for i in range(b)],
                            [ids[r, s:e] for r, (s, e) in zip(rows, spans)])
    return lp[torch.tensor(rows, device=lp.device).argsort()]  # back to [chosen; rejected]


def trainer_class():
    """A DPOTrainer subclass (built lazily: importing TRL takes seconds)."""
    import torch
    import torch.nn.functional as F
    from trl import DPOTrainer
    from trl.models.utils import disable_gradient_checkpointing
    from trl.trainer.utils import use_adapter

    class FastDPOTrainer(DPOTrainer):
        def _fast_ok(self) -> bool:
            return (list(self.loss_types) == ["sigmoid"] and self.ld_alpha is None and not self.use_weighting
                    and not self.aux_loss_enabled and self.f_divergence_type == "reverse_kl")

        def _ref_logps(self, inputs: dict):
            with torch.no_grad(), disable_gradient_checkpointing(self.model, self.args.gradient_checkpointing_kwargs):
                if self.ref_model is None:  # PEFT: the adapter-disabled policy is the reference
                    unwrapped = self.accelerator.unwrap_model(self.model)
                    with use_adapter(unwrapped, adapter_name="ref" if "ref" in unwrapped.peft_config else None):
                        return completion_logps(unwrapped, inputs)
                return completion_logps(self.ref_model, inputs)

        def compute_ref_log_probs(self, model, inputs):
            if self._fast_ok():
                ref = self._ref_logps(inputs)
                if ref is not None:
                    return ref.chunk(2, dim=0)
            return super().compute_ref_log_probs(model, inputs)

        def _compute_loss(self, model, inputs, return_outputs):
            logps = completion_logps(model, inputs) if self._fast_ok() and not return_outputs else None
            if logps is None:
                return super()._compute_loss(model, inputs, return_outputs)
            if self.precompute_ref_logps:
                ref_c, ref_r = inputs["ref_chosen_logps"], inputs["ref_rejected_logps"]
            else:
                ref = self._ref_logps(inputs)
                if ref is None:
                    return super()._compute_loss(model, inputs, return_outputs)
                ref_c, ref_r = ref.chunk(2, dim=0)
            chosen, rejected = logps.chunk(2, dim=0)
            chosen_lr, rejected_lr = chosen - ref_c, rejected - ref_r
            loss = (-F.logsigmoid(self.beta * (chosen_lr - rejected_lr))).mean() * self.loss_weights[0]
            self._log_metrics(inputs, chosen, rejected, chosen_lr, rejected_lr)
            return loss

        def _log_metrics(self, inputs, chosen, rejected, chosen_lr, rejected_lr) -> None:
            """TRL's reward/log-prob metrics (entropy and logit means need full logits: not logged)."""
            mode = "train" if self.model.training else "eval"
            if mode == "train":
                n = self.accelerator.gather_for_metrics(inputs["attention_mask"].sum()).sum().item()
                self._total_train_tokens += n
            self._metrics[mode]["num_tokens"] = [self._total_train_tokens]
            rc, rr = self.beta * chosen_lr.detach(), self.beta * rejected_lr.detach()
            g = self.accelerator.gather
            self._metrics[mode]["rewards/chosen"].append(g(rc).mean().item())
            self._metrics[mode]["rewards/rejected"].append(g(rr).mean().item())
            self._metrics[mode]["rewards/accuracies"].append(g((rc > rr).float()).mean().item())
            self._metrics[mode]["rewards/margins"].append(g(rc - rr).mean().item())
            self._metrics[mode]["logps/chosen"].append(g(chosen.detach()).mean().item())
            self._metrics[mode]["logps/rejected"].append(g(rejected.detach()).mean().item())

    return FastDPOTrainer
