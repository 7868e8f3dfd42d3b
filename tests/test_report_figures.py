"""Report figures are drawn once per content: an unchanged figure is not redrawn (no matplotlib)."""

from __future__ import annotations

from rlhf_trust.report import figures
from rlhf_trust.report.collect import Cell, Vertical


def _vertical(dpo: float) -> Vertical:
    return Vertical("bias", "agreeability_index", False,
                    cells={"base": Cell(0.5, 0.4, 0.6, 200), "dpo": Cell(dpo, dpo - 0.1, dpo + 0.1, 200)})


def test_unchanged_figure_is_not_redrawn_and_changed_one_is(tmp_path, monkeypatch):
    path = tmp_path / "bias.png"
    figures.bar_chart(_vertical(0.3), path)
    first = path.read_bytes()
    assert first[:4] == b"\x89PNG"

    import matplotlib.pyplot as plt

    calls = []
    real = plt.subplots
    monkeypatch.setattr(plt, "subplots", lambda *a, **k: calls.append(1) or real(*a, **k))
    figures.bar_chart(_vertical(0.3), path)          # same data: the PNG is kept as it is
    assert calls == [] and path.read_bytes() == first
    figures.bar_chart(_vertical(0.2), path)          # new data: redrawn
    assert calls == [1] and path.read_bytes() != first
    path.write_bytes(b"not a png")                   # a damaged file is redrawn, not trusted
    figures.bar_chart(_vertical(0.2), path)
    assert calls == [1, 1] and path.read_bytes()[:4] == b"\x89PNG"
