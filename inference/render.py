"""A self-contained right-to-left HTML view of predictions (no network)."""
from __future__ import annotations

import html
from typing import Optional, Sequence

from .scheme import Scheme, builtin_scheme
from .schema import Document
STYLE = """
body{font-family:'Noto Naskh Arabic','Amiri','Segoe UI',Tahoma,sans-serif;max-width:60rem;margin:2rem auto;
line-height:2.1;background:#fafafa;color:#222}
article{background:#fff;border:1px solid #ddd;border-radius:8px;padding:1rem 1.5rem;margin-bottom:1.5rem}
mark{border-radius:4px;padding:0 .2em}
mark sub{font-family:monospace;font-size:.65em;margin-inline-start:.25em;direction:ltr;unicode-bidi:isolate}
.legend span{margin-inline-end:1em;padding:0 .4em;border-radius:4px}
table{border-collapse:collapse;font-size:.9em;margin-top:.5rem}td,th{border:1px solid #ddd;padding:.1em .6em}
.meta{color:#666;font-size:.85em;direction:ltr;text-align:left}
"""


def _highlight(doc: Document, scheme: Scheme) -> str:
    out, pos = [], 0
    for e in sorted(doc.entities, key=lambda e: e.start):
        out.append(html.escape(doc.text[pos:e.start]))
        score = f" {e.score:.2f}" if e.score is not None else ""
        out.append(f'<mark class="ent ent-{e.label}" data-label="{e.label}" data-id="{e.id}" '
                   f'style="background:{scheme.color(e.label)}" title="{e.label}{score}">'
                   f'{html.escape(doc.text[e.start:e.end])}<sub>{e.id} {e.label}</sub></mark>')
        pos = e.end
    out.append(html.escape(doc.text[pos:]))
    return "".join(out).replace("\n", "<br>\n")


def _relations(doc: Document) -> str:
    if not doc.relations:
        return "<p class='norel'>لا علاقات</p>"
    by_id = {e.id: e for e in doc.entities}
    rows = "".join(
        f"<tr class='rel'><td>{html.escape(by_id[r.head].text or '')} <small>({r.head})</small></td>"
        f"<td dir='ltr'>{r.label}</td><td>{html.escape(by_id[r.tail].text or '')} <small>({r.tail})</small></td>"
        f"<td dir='ltr'>{'' if r.score is None else f'{r.score:.2f}'}</td></tr>" for r in doc.relations)
    return f"<table><tr><th>الرأس</th><th>العلاقة</th><th>الذيل</th><th>الثقة</th></tr>{rows}</table>"


def render_html(docs: Sequence[Document], title: str = "رصد", scheme: Optional[Scheme] = None) -> str:
    """The page for `docs`; colours and legend come from the model's scheme (built-in by default)."""
    scheme = scheme or builtin_scheme()
    legend = "".join(f'<span style="background:{scheme.color(lab)}">{lab}</span>' for lab in scheme.entities)
    body = "".join(f"<article><div class='meta'>{html.escape(d.id)}</div><p>{_highlight(d, scheme)}</p>"
                   f"{_relations(d)}"
                   f"</article>" for d in docs)
    return (f"<!DOCTYPE html><html lang='ar' dir='rtl'><head><meta charset='utf-8'><title>{html.escape(title)}"
            f"</title><style>{STYLE}</style></head><body><h1>{html.escape(title)}</h1>"
            f"<p class='legend'>{legend}</p>{body}</body></html>")
