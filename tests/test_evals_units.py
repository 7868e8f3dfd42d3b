"""units.csv: the headline's per-unit values, which pair two models' cells by unit id.

A backend whose answer depends on the prompt (so units differ in value) on the real data: the
mean of the units is the headline, their count its n, and two models give the same unit ids."""

from __future__ import annotations

import zlib

import pytest

from rlhf_trust import evals
from rlhf_trust.evals.backends import CallableBackend
from rlhf_trust.evals.stage import read_units, write_units

ANSWERS = [" I agree.", " I disagree.", " not wrong.", " wrong.", " fuck you, idiot", " (0)", " (1)",
           " 555-0100 jane@enron.com", " I don't know"]
LIMITS = {"toxicity": 3, "bias": 5, "ethics": 12, "truthfulness": 40, "privacy": 2}


def varied(salt: int) -> CallableBackend:
    def fn(prompt: str, i: int) -> str:
        k = (zlib.crc32(prompt.encode()) + i + salt) % (len(ANSWERS) + 1)
        return prompt if k == len(ANSWERS) else ANSWERS[k]  # echoing the prompt leaks its secret
    return CallableBackend(fn, name=f"m{salt}")


@pytest.mark.parametrize("vertical", list(LIMITS))
def test_units_agree_with_headline_and_n(vertical, raw_data, tmp_path):
    res = evals.run(vertical, varied(0), data_dir=raw_data, limit=LIMITS[vertical], n_boot=50)
    head = res.metrics["headline"]
    path = tmp_path / "units.csv"
    write_units(path, res.units)
    units = read_units(path)
    assert units == res.units and path.read_text().splitlines()[0] == "unit_id,value"
    assert len(units) == res.metrics[f"{head}_n"] > 0
    assert len({u for u, _ in units}) == len(units)  # ids are unique
    assert sum(v for _, v in units) / len(units) == pytest.approx(res.metrics[head], abs=1e-12)
    other = evals.run(vertical, varied(3), data_dir=raw_data, limit=LIMITS[vertical], n_boot=50)
    assert [u for u, _ in other.units] == [u for u, _ in units]  # same items -> same ids
    assert [v for _, v in other.units] != [v for _, v in units]  # ... but not the same values


@pytest.mark.parametrize("vertical, answer, headline", [
    ("ethics", " not wrong.", 1.0), ("ethics", " wrong.", 0.0), ("bias", " I agree.", 1.0), ("bias", " I disagree.", 0.0)])
def test_loglik_protocol_picks_the_likelier_verdict(vertical, answer, headline, raw_data):
    """A backend that 'prefers' what it would say (a continuation is likely when its answer starts
    with it, as an LM's next tokens) gives the same verdict under the log-likelihood protocol as
    under generation; one row per unit, no parse failures. Uncalibrated: the backend ignores the
    item, so its content-free prior is its answer, and calibration would leave a tie."""
    backend = CallableBackend(lambda prompt, i: answer,
                              loglik=lambda ctx, cont: 0.0 if answer.startswith(cont) else -5.0)
    res = evals.run(vertical, backend, data_dir=raw_data, limit=6, n_boot=50,
                    settings_entry={"protocol": "loglik", "calibration": "none"})
    assert res.metrics[res.metrics["headline"]] == headline
    assert res.metrics["parse_failure_rate"] == 0.0
    assert len(res.rows) == len({(r["id"], r["condition"]) for r in res.rows})
    gen = evals.run(vertical, backend, data_dir=raw_data, limit=6, n_boot=50)
    assert [u for u, _ in gen.units] == [u for u, _ in res.units]  # same unit ids under both protocols
