"""The token pick alone, per decode step of 64 rows over gemma's 262,144-token vocabulary (1 thread,
CPU ms, best of 5): transformers' generate (float32 copy of the last-position logits, then argmax, or
the inverse-CDF logits processor + argmax) vs evals/decode.py's loop (max on the model-dtype logits,
or the inverse-CDF draw in a reused float32 buffer). Asserts the picks are identical.

    nice -n 10 .venv/bin/python benchmarks/eval_decode_pick.py [--out benchmarks/results/eval_decode_pick.json]
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--out", default=None)
    args = ap.parse_args()
    import torch

    from rlhf_trust.evals.sampling import InverseCDFSampler, inverse_cdf_draw

    torch.set_num_threads(1)
    proc = InverseCDFSampler(0.5)
    buf = torch.empty(64, 262144)
    picks = {
        "generate greedy": lambda x: x[:, -1].to(copy=True, dtype=torch.float32).argmax(-1),
        "loop greedy": lambda x: x[:, -1].max(-1).indices,
        "generate sampled": lambda x: proc(None, x[:, -1].to(copy=True, dtype=torch.float32)).argmax(-1),
        "loop sampled": lambda x: inverse_cdf_draw(x[:, -1], 0.5, out=buf)[:, 0],
    }
    res = {}
    for dt in (torch.bfloat16, torch.float32):
        logits = (torch.randn(64, 1, 262144) * 3).to(dt)
        for name, f in picks.items():
            f(logits)
            ts = []
            for _ in range(5):
                c = time.process_time()
                f(logits)
                ts.append(time.process_time() - c)
            res[f"{str(dt)[6:]} {name}"] = round(min(ts) * 1000, 1)
        got = {}
        for name, f in picks.items():
            torch.manual_seed(0)
            got[name] = f(logits)
        assert torch.equal(got["generate greedy"], got["loop greedy"])
        assert torch.equal(got["generate sampled"], got["loop sampled"])
    print(json.dumps(res, indent=1))
    if args.out:
        Path(args.out).write_text(json.dumps({"rows": 64, "vocab": 262144, "threads": 1, "ms_per_step": res},
                                             indent=2) + "\n")


if __name__ == "__main__":
    main()
