"""tiny-gpt-neox: a small random GPTNeoX (the Pythia architecture) with a BPE tokenizer trained
offline with `tokenizers`. For tests and quick runs: builds in well under a second."""

from __future__ import annotations

from collections.abc import Iterable
from pathlib import Path

NAME = "tiny-gpt-neox"
SPECIALS = ["<pad>", "<unk>", "<bos>", "<eos>"]
DEFAULT_SIZES = {"hidden_size": 64, "layers": 2, "heads": 4, "vocab_size": 512, "max_positions": 512,
                 "seed": 0}


def default_texts(limit: int = 300) -> list[str]:
    """HH dialogues from the raw data mirror (what the base model would see), for the tokenizer."""
    import gzip
    import json

    from rlhf_trust import paths
    from rlhf_trust.config import DataConfig
    from rlhf_trust.errors import DataError

    roots = [paths.repo_root(), Path(__file__).resolve().parents[3]]  # cwd repo, then the source checkout
    for base in [r / d for r in roots for d in (DataConfig.dir, DataConfig.mirror_dir)]:
        f = base / "hh_rlhf" / "harmless-base-test.jsonl.gz"
        if f.is_file():
            with gzip.open(f, "rt", encoding="utf-8") as fh:
                rows = [json.loads(line) for _, line in zip(range(limit), fh)]
            return [r["chosen"] for r in rows] + [r["rejected"] for r in rows]
    raise DataError("tiny-gpt-neox: no texts given and no HH data found under data/ or the mirror dir")


def train_tokenizer(texts: Iterable[str], vocab_size: int):
    """Byte-level BPE (GPT-NeoX style) trained on `texts`, wrapped for transformers."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast

    tok = Tokenizer(models.BPE(unk_token="<unk>"))
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(vocab_size=vocab_size, special_tokens=SPECIALS, show_progress=False,
                                  initial_alphabet=pre_tokenizers.ByteLevel.alphabet())
    tok.train_from_iterator(list(texts), trainer)
    return PreTrainedTokenizerFast(tokenizer_object=tok, pad_token="<pad>", unk_token="<unk>",
                                   bos_token="<bos>", eos_token="<eos>", padding_side="right")


def build(texts: Iterable[str] | None = None, **sizes):
    """(model, tokenizer): random GPTNeoXForCausalLM seeded by `seed`, tokenizer trained on texts."""
    import torch
    from transformers import AutoModelForCausalLM, GPTNeoXConfig

    unknown = set(sizes) - set(DEFAULT_SIZES)
    if unknown:
        raise TypeError(f"build_tiny_base: unknown size(s) {sorted(unknown)}; known: {sorted(DEFAULT_SIZES)}")
    s = {**DEFAULT_SIZES, **sizes}
    tok = train_tokenizer(default_texts() if texts is None else texts, s["vocab_size"])
    cfg = GPTNeoXConfig(
        vocab_size=len(tok), hidden_size=s["hidden_size"], num_hidden_layers=s["layers"],
        num_attention_heads=s["heads"], intermediate_size=4 * s["hidden_size"],
        max_position_embeddings=s["max_positions"], pad_token_id=tok.pad_token_id,
        bos_token_id=tok.bos_token_id, eos_token_id=tok.eos_token_id, tie_word_embeddings=False,
    )
    cfg._name_or_path = NAME
    torch.manual_seed(s["seed"])
    model = AutoModelForCausalLM.from_config(cfg, dtype=torch.float32)
    model.generation_config.pad_token_id = tok.pad_token_id
    model.generation_config.eos_token_id = tok.eos_token_id
    return model, tok
