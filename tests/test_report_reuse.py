"""A re-run report reuses the previous contrasts when their input (paired units, directions, stats
code) is unchanged, and computes them afresh when any unit value changes."""

from __future__ import annotations

import json
from types import SimpleNamespace

from rlhf_trust.fileio import write_text
from rlhf_trust.report import contrasts, paired


def _units(tmp, model: str, values: list[float]) -> None:
    write_text(tmp / "toxicity" / model / "units.csv",
               "unit_id,value\n" + "".join(f"u{i},{v}\n" for i, v in enumerate(values)))


def test_unchanged_units_reuse_the_previous_contrasts_changed_units_recompute(tmp_path, monkeypatch):
    for m, k in (("base", 0.0), ("sft", 0.1), ("ppo", 0.2), ("dpo", 0.05)):
        _units(tmp_path, m, [0.1 * (i % 5) + k for i in range(12)])
    v = SimpleNamespace(name="toxicity", higher_is_better=False)
    digest: dict[str, str] = {}
    fresh, notes = contrasts.compute([v], tmp_path, digest_out=digest)
    previous = tmp_path / "trust_summary.json"
    previous.write_text(json.dumps({"contrasts": fresh, "contrast_notes": notes,
                                    "contrasts_digest": digest["digest"]}))

    calls = []
    real = paired.compare
    monkeypatch.setattr(paired, "compare", lambda *a, **k: calls.append(a) or real(*a, **k))
    again, _ = contrasts.compute([v], tmp_path, previous)
    assert calls == [] and json.loads(json.dumps(again)) == json.loads(json.dumps(fresh))

    _units(tmp_path, "dpo", [0.1 * (i % 5) + 0.3 for i in range(12)])  # one model's units changed
    changed, _ = contrasts.compute([v], tmp_path, previous)
    assert len(calls) == 5 and changed["toxicity"]["dpo-base"]["delta"] != fresh["toxicity"]["dpo-base"]["delta"]
