"""Self-contained HTML (no CDN): the same tables as the Markdown, figures embedded as base64."""

from __future__ import annotations

import base64
import html
from pathlib import Path

from rlhf_trust.report import contrasts, tables
from rlhf_trust.report.collect import STAGES, Results

CSS = """body{font-family:system-ui,sans-serif;max-width:1100px;margin:2em auto;padding:0 1em;color:#222}
table{border-collapse:collapse;margin:1em 0;font-size:13px}td,th{border:1px solid #ccc;padding:4px 8px;
vertical-align:top}th{background:#f3f3f3}.up{color:#1a7f37}.down{color:#c62828}.missing{color:#999}
img{max-width:420px;border:1px solid #eee}img.forest{max-width:760px}
.findings{font-size:15px;line-height:1.5}code{background:#f6f8fa;padding:1px 4px}"""


def _table(header: list[str], rows: list[list[str]], links: dict[str, str] | None = None) -> str:
    """Only a significant change (`▲*` / `▼*`) is coloured. `links`: first-column text -> href."""
    def td(x: str, first: bool) -> str:
        cls = ("up" if "▲*" in x else "down" if "▼*" in x else "missing" if x == tables.DASH else "")
        body = html.escape(x)
        if first and links and x in links:
            body = f'<a href="{html.escape(links[x])}">{body}</a>'
        return f'<td class="{cls}">{body}</td>' if cls else f"<td>{body}</td>"
    head = "".join(f"<th>{html.escape(h)}</th>" for h in header)
    body = "".join("<tr>" + "".join(td(str(c), i == 0) for i, c in enumerate(r)) + "</tr>" for r in rows)
    return f"<table><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>"


def _img(path: Path, cls: str = "") -> str:
    data = base64.b64encode(path.read_bytes()).decode()
    klass = f' class="{html.escape(cls)}" id="{html.escape(cls)}"' if cls else ""
    return f'<img{klass} alt="{html.escape(path.stem)}" src="data:image/png;base64,{data}">'


def render(res: Results, figures: dict[str, str], out_dir: Path, k: int, pages: dict[str, str] | None = None) -> str:
    from rlhf_trust.report import findings

    p = res.provenance
    pages = pages or {}
    parts = ["<!doctype html><html><head><meta charset='utf-8'><title>Trustworthiness summary</title>",
             f"<style>{CSS}</style></head><body><h1>Trustworthiness summary</h1>",
             *([f"<p><strong>{tables.SMOKE_BANNER}</strong></p>"] if p.get("smoke") else []),
             f"<p class='identity'>{html.escape(findings.identity(p, res.verticals, findings.seed_count(res.contrasts)))}</p>",
             f"<p class='findings' id='findings'>{html.escape(findings.paragraph(res.contrasts, res.verticals))}</p>",
             *([_img(out_dir / figures["forest"], "forest")] if "forest" in figures else []),
             "<p>Headline metric per trust vertical and alignment stage, with bootstrap 95% CIs.</p>",
             _table(["vertical", "metric", *STAGES], tables.table_rows(res)),
             f"<h2>Changes</h2><p>{html.escape(contrasts.LEGEND)} The vertical links to its units side by side.</p>",
             _table(contrasts.HEADER, contrasts.rows(res.contrasts, [v.name for v in res.verticals]), pages)]
    if res.notes:
        parts.append("<p>Skipped contrasts:</p><ul>" + "".join(f"<li>{html.escape(n)}</li>" for n in res.notes)
                     + "</ul>")
    for v in tables.significant_first(res):
        parts.append(f"<h2>{html.escape(v.name)}</h2>")
        if findings.is_constant(v, res.contrasts.get(v.name, {})):
            parts.append(f"<p>{html.escape(v.name)}: {html.escape(findings.CONSTANT)}.</p>")
        if v.name in figures:
            parts.append(_img(out_dir / figures[v.name]))
        rows = tables.top_pairs(v, k)
        if rows:
            parts.append(f"<p>Most influential HH pairs, ranked by {html.escape(tables.methods(v))} "
                         "(negative = lowers the test loss).</p>")
            parts.append(_table(["stage", "kind", "score", "pair", "prompt", "chosen", "rejected"], rows))
    if res.stages:
        parts += ["<h2>Stages</h2>", _table(["stage", "cost", "MLflow run"], tables.stage_rows(res))]
    runs = "".join(f"<li>{html.escape(n)}: <code>{html.escape(str(r))}</code></li>"
                   for n, r in sorted(p.get("mlflow_runs", {}).items()))
    parts += ["<h2>Provenance</h2><ul>",
              f"<li>git commit: <code>{html.escape(str(p.get('git.commit')))}</code> (dirty: {html.escape(str(p.get('git.dirty')))})</li>",
              f"<li>data version: <code>{html.escape(str(p.get('data.version')))}</code></li>",
              f"<li>training set (curated HH set md5): <code>{html.escape(str(p.get('train_data.version')))}</code></li>",
              f"<li>params.yaml sha256: <code>{html.escape(str(p.get('params.sha256')))}</code></li>",
              f"<li>MLflow runs<ul>{runs}</ul></li></ul>"]
    if res.missing:
        items = "".join(f"<li>{html.escape(m)}</li>" for m in res.missing)
        parts.append(f"<h2>Missing</h2><p>{len(res.missing)} result(s) not found:</p><ul>{items}</ul>")
    parts.append("</body></html>")
    return "\n".join(parts)
