"""TRL's SFTTrainer with its chunked completion-only NLL (`loss_type="chunked_nll"`, TRL's default)
computed by the project's fused head (models/fused_head.py) when the LM head is frozen.

Why hand-written: TRL 1.12's chunked NLL already skips prompt tokens, but each 256-token chunk
runs `h.float() @ w.float().t()` under gradient checkpointing, so on this CPU every chunk copies
the 262k x 640 head to fp32 (and autocast back to bf16), recomputes the head in backward, and
takes an fp32 log-softmax plus an argmax and an entropy over the full logits for its metrics. The
fused head forms log p and the gradient with respect to the hidden states in one pass, no
recomputation, and gives the same metrics (mean_token_accuracy, entropy) from that pass. The rest
of TRL's path (decoder call, label shift, `num_items_in_batch` normalisation, metrics logging) is
TRL's own: only the module-level loss function it calls is swapped, for the duration of
`compute_loss`. Same loss and LoRA gradients as TRL's path within 1e-4 (tests). A trainable head
(full fine-tuning) runs TRL's function unchanged. With `padding_free`, attention inside
`compute_loss` is train/packed_attention.py's one causal SDPA call per packed sequence.
"""

from __future__ import annotations

import contextlib
from typing import Any


def fused_chunked_ce(hidden_states, lm_head_weight, chunk_size, labels=None, shift_labels=None,
                     num_items_in_batch=None, final_logit_softcapping=None, lm_head_bias=None):
    """TRL's `_chunked_cross_entropy_loss` contract: (loss, correct tokens, entropy sum, valid tokens)."""
    from rlhf_trust.models.fused_head import token_logps

    if shift_labels is not None:
        hidden, labels = hidden_states.reshape(-1, hidden_states.size(-1)), shift_labels.reshape(-1)
    else:
        hidden = hidden_states[..., :-1, :].reshape(-1, hidden_states.size(-1))
        labels = labels[..., 1:].reshape(-1)
    valid = labels != -100
    n_valid = valid.sum()
    stats: dict = {}
    lp = token_logps(hidden[valid], lm_head_weight, lm_head_bias, labels[valid], final_logit_softcapping, stats)
    loss = -lp.sum()
    loss = loss / (n_valid.clamp(min=1) if num_items_in_batch is None else num_items_in_batch)
    return loss, stats["correct"], stats["entropy_sum"], n_valid


@contextlib.contextmanager
def _fused_loss(model: Any):
    """TRL's module-level chunked loss swapped for `fused_chunked_ce` when the head is frozen and plain."""
    from trl.trainer import sft_trainer

    from rlhf_trust.models.fused_head import split_head

    parts = split_head(model)
    if parts is None or parts[1].weight.requires_grad:
        yield
        return
    plain = sft_trainer._chunked_cross_entropy_loss

    def loss_fn(*args: Any, logit_scale: float = 1.0, **kwargs: Any):
        if logit_scale != 1.0:  # not a case the fused head covers
            return plain(*args, logit_scale=logit_scale, **kwargs)
        return fused_chunked_ce(*args, **kwargs)

    sft_trainer._chunked_cross_entropy_loss = loss_fn
    try:
        yield
    finally:
        sft_trainer._chunked_cross_entropy_loss = plain


def trainer_class():
    """An SFTTrainer subclass (built lazily: importing TRL takes seconds)."""
    from trl import SFTTrainer

    class FastSFTTrainer(SFTTrainer):
        def compute_loss(self, model, inputs, return_outputs=False, num_items_in_batch=None):
            from rlhf_trust.train.packed_attention import packed_attention

            plain = self.accelerator.unwrap_model(model)
            loss = _fused_loss(plain) if self.args.loss_type == "chunked_nll" else contextlib.nullcontext()
            attention = packed_attention(plain) if self.args.padding_free else contextlib.nullcontext()
            with loss, attention:
                return super().compute_loss(model, inputs, return_outputs, num_items_in_batch)

    return FastSFTTrainer
