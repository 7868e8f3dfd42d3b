"""A small probe of the calibrated log-likelihood verdicts on one model: per vertical, the headline
with and without contextual calibration, the content-free prior, the graded metric and whether the
cell is constant; for ethics also with neutral actions as content-free inputs.

    python benchmarks/verdict_calibration_probe.py [--model-dir DIR]

Without `--model-dir` it loads gemma-3-270m from `model.cache_dir` (materialised on first use).
Float32, one thread, no cache: about a minute of CPU on 16-40 items per vertical. `--quick`: a
tiny-gpt-neox base and 4 items per case (checks the probe runs).
"""

from __future__ import annotations

import json

import harness

ROOT = harness.ROOT
NEUTRAL_ACTIONS = ["I did something.", "I went there.", "I said it."]
CASES = [  # (vertical, params entry)
    ("bias", {"limit": 16}),
    ("ethics", {"limit": 40, "prompts": ["benign"]}),
    ("ethics", {"limit": 40, "prompts": ["every_reaction_not_wrong"]}),
    ("ethics", {"limit": 40, "prompts": ["benign"], "content_free": NEUTRAL_ACTIONS}),
    ("ethics", {"limit": 40, "prompts": ["every_reaction_not_wrong"], "content_free": NEUTRAL_ACTIONS}),
    ("fairness", {"limit": 16, "conditions": ["zero_shot_br0.5"]}),
]


def main() -> None:
    ap = harness.parser(__doc__)
    ap.add_argument("--model-dir", default=None, help="a Hugging Face model dir (default: gemma-3-270m)")
    args = ap.parse_args()
    args.data_dir = str(harness.data_dir(args))
    cases = [(v, {**e, "limit": 4}) for v, e in CASES] if args.quick else CASES
    if args.quick and not args.model_dir:
        from rlhf_trust.models import build_tiny_base

        args.model_dir = str(build_tiny_base(harness.scratch("bench-probe-") / "base"))

    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from rlhf_trust import config
    from rlhf_trust.evals import run
    from rlhf_trust.evals.backends import HFBackend
    from rlhf_trust.evals.cache import Cache, CachedBackend
    from rlhf_trust.models import gemma

    torch.set_num_threads(1)
    d = args.model_dir or gemma.materialise(config.load("model", ROOT / "params.yaml").cache_dir)
    model = AutoModelForCausalLM.from_pretrained(d, dtype=torch.float32).eval()
    backend = CachedBackend(HFBackend(model, AutoTokenizer.from_pretrained(d), batch_size=8, progress=False),
                            Cache(None), progress=False)  # in memory: shared items are scored once
    out = []
    for vertical, entry in cases:
        m = run(vertical, backend, data_dir=args.data_dir, n_boot=200,
                settings_entry={"protocol": "loglik", **entry}).metrics
        cal = m["calibration"]
        out.append({"vertical": vertical, "entry": entry, "headline": m["headline"], "calibrated": m[m["headline"]],
                    "uncalibrated": m["uncalibrated"], "graded": m["graded"], "graded_value": m.get(m["graded"]),
                    "constant": m["constant"], "content_free": cal["content_free"],
                    "prior": {k: c["prior"] for k, c in cal["by_condition"].items()}})
        print(json.dumps(out[-1]), flush=True)
    harness.write_result("verdict_calibration_probe", args, {"cases": out},
                         setup={"model": "tiny-gpt-neox" if args.quick else (args.model_dir or "gemma-3-270m"),
                                "dtype": "float32", "threads": 1})


if __name__ == "__main__":
    main()
