"""`rlhf-trust samples <vertical>`: the units behind a vertical's numbers, models side by side.

Per unit (the headline's bootstrap unit, units.csv) it gathers the prompt, each model's answer and
verdict (samples.jsonl.gz), the unit's score and its part in each contrast between the chosen models
(the paired difference B - A, whose mean over units is the contrast's Δ). A model cell may have a
training-seed level (eval/<vertical>/<model>/s<k>/) or not (an untrained model, or a one-seed layout).
sample_page.py renders the page; `terminal` is the short table the command prints.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from rlhf_trust import fileio, paths, pipeline
from rlhf_trust.errors import DataError, UserError
from rlhf_trust.report.contrasts import CONTRASTS


@dataclass
class Answer:
    text: str          # the first sample's generation (or chosen option)
    verdict: str       # the vertical's reading of it
    samples: int       # how many samples the unit has


@dataclass
class Unit:
    unit: str
    prompt: str
    scores: dict[str, float]                   # model -> the unit's headline value
    answers: dict[str, Answer]                 # model -> its answer (absent without samples)
    deltas: dict[str, float] = field(default_factory=dict)   # "dpo-base" -> score B - score A


@dataclass
class Page:
    vertical: str
    models: list[str]
    seed: int | None
    contrasts: list[tuple[str, str]]           # (B, A) pairs among the models, in the report's order
    units: list[Unit]
    total: int                                 # units before --changed
    notes: list[str]
    changed: bool = False                      # only units whose score differs between the models
    headline: str = ""
    higher_is_better: bool = True

    @property
    def names(self) -> list[str]:
        return [f"{b}-{a}" for b, a in self.contrasts]


def cell_dir(eval_dir: Path, vertical: str, model: str, seed: int | None, notes: list[str]) -> Path:
    """The cell's directory: s<seed>/ when the model has a seed level, else the model's own."""
    d = Path(eval_dir) / vertical / model
    seeds = sorted(int(p.name[1:]) for p in d.glob("s*") if p.is_dir() and p.name[1:].isdigit())
    if not seeds:
        return d
    if seed is None:
        notes.append(f"{model}: seed {seeds[0]} of {len(seeds)} (choose one with --seed)")
        return d / f"s{seeds[0]}"
    if seed not in seeds:
        raise UserError(f"{vertical} @ {model}: no seed {seed} (have: {', '.join(map(str, seeds))})", exit_code=1)
    return d / f"s{seed}"


def pick_contrasts(models: Sequence[str]) -> list[tuple[str, str]]:
    """The report's contrasts whose two models are both shown; else each later model against the first."""
    known = [(b, a) for b, a in CONTRASTS if a in models and b in models]
    return known or [(m, models[0]) for m in models[1:]]


def load(vertical: str, models: Sequence[str], seed: int | None = None, changed: bool = False,
         eval_dir: Path = paths.EVAL) -> Page:
    from rlhf_trust import evals
    from rlhf_trust.evals import sample_table
    from rlhf_trust.report import paired

    if vertical not in evals.names():
        raise UserError(f"unknown vertical '{vertical}' (known: {', '.join(evals.names())})", exit_code=1)
    bad = [m for m in models if m not in pipeline.MODELS]
    if bad or not models:
        raise UserError(f"unknown model '{bad[0] if bad else ''}' (known: {', '.join(pipeline.MODELS)})",
                        exit_code=1)
    notes: list[str] = []
    scores: dict[str, dict[str, float]] = {}
    rows: dict[str, dict[str, list[dict]]] = {}
    for m in models:
        d = cell_dir(eval_dir, vertical, m, seed, notes)
        if not (d / "units.csv").is_file():
            raise UserError(f"no results for {vertical} @ {m} ({d / 'units.csv'} missing; "
                            f"run `rlhf-trust eval --vertical {vertical} --model {m}`)")
        try:
            scores[m] = paired.read_units(d / "units.csv")
        except DataError as e:
            raise DataError(f"{vertical} @ {m}: {e}") from None
        samples = d / "samples.jsonl.gz"
        if samples.is_file():
            rows[m] = sample_table.by_unit(fileio.read_jsonl(samples), scores[m])
        else:
            notes.append(f"{m}: no samples.jsonl.gz (scores only)")
    spec = evals.get(vertical)
    order = list(scores[models[0]])
    order += [u for m in models[1:] for u in scores[m] if u not in scores[models[0]]]
    cons = pick_contrasts(models)
    units = []
    for u in dict.fromkeys(order):
        answers, prompt = {}, ""
        for m in models:
            rs = rows.get(m, {}).get(u) or []
            if rs:
                prompt = prompt or str(rs[0].get("prompt", ""))
                answers[m] = Answer(sample_table.answer(rs[0]), sample_table.verdict(rs[0]), len(rs))
        sc = {m: scores[m][u] for m in models if u in scores[m]}
        deltas = {f"{b}-{a}": sc[b] - sc[a] for b, a in cons if a in sc and b in sc}
        units.append(Unit(u, prompt, sc, answers, deltas))
    total = len(units)
    if changed:  # the outcome (the unit's score), not the wording of an answer
        units = [x for x in units if len(set(x.scores.values())) > 1]
    return Page(vertical, list(models), seed, cons, units, total, notes, changed=changed, headline=spec.headline,
                higher_is_better=spec.higher_is_better)


def short(text: str, n: int) -> str:
    text = " ".join(str(text).split())
    return text if len(text) <= n else text[: n - 1] + "…"


def terminal(page: Page, limit: int = 15, width: int = 28) -> str:
    """A short fixed-width table: unit, each model's score and answer, each contrast's Δ."""
    head = ["unit", *(f"{m} score" for m in page.models), *page.names, *(f"{m} answer" for m in page.models)]
    body = []
    for x in page.units[:limit]:
        body.append([short(x.unit, 32), *(f"{x.scores[m]:.3g}" if m in x.scores else "—" for m in page.models),
                     *(f"{x.deltas[n]:+.3g}" if n in x.deltas else "—" for n in page.names),
                     *(short(x.answers[m].text, width) if m in x.answers else "—" for m in page.models)])
    widths = [max(len(r[i]) for r in [head, *body]) for i in range(len(head))]
    lines = ["  ".join(c.ljust(w) for c, w in zip(r, widths, strict=True)).rstrip() for r in [head, *body]]
    if len(page.units) > limit:
        lines.append(f"… {len(page.units) - limit} more unit(s) on the page")
    return "\n".join(lines)


def summary(page: Page) -> str:
    which = f" whose score differs between {', '.join(page.models)}" if page.changed else ""
    seed = f", seed {page.seed}" if page.seed is not None else ""
    return (f"{page.vertical}{seed}: {len(page.units)} of {page.total} units{which}; "
            f"{page.headline} per unit, {'higher' if page.higher_is_better else 'lower'} = more trustworthy")


def write_page(page: Page, out: Path, back: str | None = None) -> Path:
    from rlhf_trust.report import sample_page

    fileio.write_text(out, sample_page.render(page, back))
    return out


def parse_models(text: str) -> list[str]:
    return [m.strip() for m in text.split(",") if m.strip()]


def cli(args: Any) -> int:
    page = load(args.vertical, parse_models(args.models), args.seed, args.changed)
    out = Path(args.out) if args.out else paths.OUTPUTS / "samples" / f"{args.vertical}.html"
    write_page(page, out)
    print(summary(page))
    for n in page.notes:
        print(f"note: {n}")
    if page.units:
        print(terminal(page))
    elif page.changed:
        print(f"no unit's outcome differs between {' and '.join(page.models)}")
    print(f"page: {out}")
    return 0
