"""The samples page (samples.py's Page) as one self-contained HTML file: no script, no external
resource, every text from the data escaped."""

from __future__ import annotations

import html

CSS = """body{font-family:system-ui,sans-serif;margin:1.5em;color:#222}table{border-collapse:collapse;
font-size:13px}td,th{border:1px solid #ccc;padding:4px 6px;vertical-align:top;text-align:left}
th{background:#f3f3f3;position:sticky;top:0}td.t{max-width:28em;white-space:pre-wrap;word-break:break-word}
td.n{text-align:right;font-variant-numeric:tabular-nums}.pos{color:#1a7f37}.neg{color:#c62828}
details summary{cursor:pointer;color:#555}code{background:#f6f8fa;padding:1px 4px}"""
CUT = 1200   # characters of a prompt or answer shown (the full text is in samples.jsonl.gz)


def esc(x: object) -> str:
    return html.escape(str(x), quote=True)


def _text(s: str) -> str:
    s = str(s)
    if len(s) <= CUT:
        return esc(s)
    return f"{esc(s[:CUT])}<details><summary>… {len(s) - CUT} more characters</summary>{esc(s[CUT:])}</details>"


def _delta(d: float | None, higher_is_better: bool) -> str:
    if d is None:
        return '<td class="n">—</td>'
    cls = "" if d == 0 else ("pos" if (d > 0) == higher_is_better else "neg")
    return f'<td class="n {cls}">{d:+.3g}</td>'


def render(page, back: str | None = None) -> str:
    """`back`: a link to the report, shown at the top when the page sits beside it."""
    seed = f", training seed {page.seed}" if page.seed is not None else ""
    direction = "higher" if page.higher_is_better else "lower"
    head = ["unit", "prompt", *(f"{m}: answer" for m in page.models), *(f"{m}: score" for m in page.models),
            *(f"Δ {n}" for n in page.names)]
    rows = []
    for x in page.units:
        cells = [f'<td><code>{esc(x.unit)}</code></td>', f'<td class="t">{_text(x.prompt)}</td>']
        for m in page.models:
            a = x.answers.get(m)
            if a is None:
                cells.append("<td>—</td>")
                continue
            more = f" <em>(1 of {a.samples} samples)</em>" if a.samples > 1 else ""
            verdict = f"<br><small>{esc(a.verdict)}</small>" if a.verdict else ""
            cells.append(f'<td class="t">{_text(a.text)}{more}{verdict}</td>')
        cells += [f'<td class="n">{x.scores[m]:.4g}</td>' if m in x.scores else "<td>—</td>" for m in page.models]
        cells += [_delta(x.deltas.get(n), page.higher_is_better) for n in page.names]
        rows.append(f'<tr class="unit" id="{esc(x.unit)}">{"".join(cells)}</tr>')
    kept = (f"{len(page.units)} of {page.total} units: those whose score differs between the models"
            if page.changed else f"{page.total} units")
    parts = [
        "<!doctype html><html><head><meta charset='utf-8'>",
        f"<title>{esc(page.vertical)}: samples</title><style>{CSS}</style></head><body>",
        *([f'<p><a href="{esc(back)}">← the report</a></p>'] if back else []),
        f"<h1>{esc(page.vertical)}: samples, {esc(', '.join(page.models))}{esc(seed)}</h1>",
        (f"<p>{esc(kept)}. Score: the unit's <code>{esc(page.headline)}</code> ({direction} = more "
        "trustworthy). Δ B-A: the unit's paired difference; its mean over all units is the contrast's Δ "
        "in the report (green: more trustworthy, red: less). The answer is the model's generation, or "
        "the option it chose under a log-likelihood protocol.</p>"),
        *(f"<p class='note'>{esc(n)}</p>" for n in page.notes),
        "<table><thead><tr>" + "".join(f"<th>{esc(h)}</th>" for h in head) + "</tr></thead><tbody>",
        *rows, "</tbody></table></body></html>",
    ]
    return "\n".join(parts)
