"""A vertical whose headline is |mean of units| (fairness's demographic parity difference) gets
contrasts in the headline's own direction, whichever sex the gap favours."""

from __future__ import annotations

from types import SimpleNamespace

import pytest

from rlhf_trust.fileio import write_text
from rlhf_trust.report import contrasts


def _units(tmp, model: str, values: list[float]) -> None:
    write_text(tmp / "fairness" / model / "units.csv",
               "unit_id,value\n" + "".join(f"p{i},{v}\n" for i, v in enumerate(values)))


@pytest.mark.parametrize("favoured", [1.0, -1.0])  # the gap favours men (+) or women (-)
def test_a_wider_gap_is_a_positive_delta_either_way(tmp_path, favoured):
    n = 40
    base = [favoured * (2.0 if i % 2 == 0 and i < 20 else 0.0) for i in range(n)]
    wider = [favoured * (2.0 if i % 2 == 0 and i < 32 else 0.0) for i in range(n)]
    for m, vals in (("base", base), ("sft", wider), ("ppo", base), ("dpo", base)):
        _units(tmp_path, m, vals)
    v = SimpleNamespace(name="fairness", higher_is_better=False)
    out, notes = contrasts.compute([v], tmp_path)
    assert notes == []
    r = out["fairness"]["sft-base"]
    headline = [abs(sum(vals) / n) for vals in (base, wider)]
    assert r["delta"] == pytest.approx(headline[1] - headline[0]) and r["delta"] > 0
    assert r["more_trustworthy"] is False
    assert out["fairness"]["ppo-base"]["delta"] == 0
