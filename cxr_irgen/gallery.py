"""A static HTML gallery of generated image-report pairs (`index.html` next to `pairs.jsonl`)."""

from __future__ import annotations

import html
from pathlib import Path

from cxr_irgen.data.labels import CHEXPERT_LABELS, parse_labels

_STYLE = """
body{font-family:system-ui,sans-serif;margin:1.5rem;background:#f6f6f4;color:#222}
h1{font-size:1.3rem} .grid{display:grid;grid-template-columns:repeat(auto-fill,minmax(300px,1fr));gap:1rem}
.card{background:#fff;border-radius:8px;padding:.8rem;box-shadow:0 1px 3px #0002}
.card img{width:100%;image-rendering:pixelated;background:#000;border-radius:4px}
.labels,.prompt{font-size:.8rem;color:#555}.report{font-size:.85rem;margin:.4rem 0}
.ok{color:#1a7f37;font-weight:600}.bad{color:#b42318;font-weight:600}
.missing{outline:3px solid #b42318}
"""
# Marks images that failed to load and records the counts on <body> (read by the browser test).
_CHECK_IMAGES = """<script>
window.addEventListener('load', () => {
  const imgs = [...document.images];
  const broken = imgs.filter(i => !(i.complete && i.naturalWidth > 0));
  broken.forEach(i => i.classList.add('missing'));
  document.body.dataset.images = imgs.length;
  document.body.dataset.loaded = imgs.length - broken.length;
});
</script>"""


def label_agreement(requested: str, reported: str) -> tuple[int, int]:
    """How many requested positive/negative observations the report's own labels reproduce: (agree, total)."""
    want, got = parse_labels(requested), parse_labels(reported)
    agree = total = 0
    for i, _ in enumerate(CHEXPERT_LABELS):
        if want[i] == want[i] and want[i] in (0.0, 1.0):
            total += 1
            agree += int((got[i] == 1.0) == (want[i] == 1.0))
    return agree, total


def write_gallery(rows: list[dict], out_html: Path, title: str = "cxr-irgen: generated image-report pairs") -> Path:
    """Render rows of pairs.jsonl (keys: image, labels, prompt, report, report_labels) to ``out_html``.

    ``image`` is relative to the gallery (generated pairs) or an absolute path (reports of given images).
    """
    cards = []
    for row in rows:
        src = Path(row["image"]).as_uri() if row.get("image") and Path(row["image"]).is_absolute() else row.get("image")
        parts = [f'<img src="{html.escape(src)}" alt="{html.escape(row.get("labels") or "")}">'] if src else []
        parts.append(f'<div class="labels"><b>labels</b> {html.escape(row.get("labels") or "none")}</div>')
        if row.get("prompt"):
            parts.append(f'<div class="prompt"><b>prompt</b> {html.escape(row["prompt"])}</div>')
        if row.get("report") is not None:
            parts.append(f'<div class="report">{html.escape(row["report"])}</div>')
            agree, total = label_agreement(row.get("labels") or "", row.get("report_labels") or "")
            cls = "ok" if agree == total else "bad"
            parts.append(f'<div class="labels">report labels: {html.escape(row.get("report_labels") or "none")} '
                         f'<span class="{cls}">agree {agree}/{total}</span></div>')
        cards.append('<div class="card">' + "".join(parts) + "</div>")
    out_html.write_text(
        f"<!doctype html><html><head><meta charset='utf-8'><title>{html.escape(title)}</title><style>{_STYLE}</style></head>"
        f"<body><h1>{html.escape(title)}</h1><p>{len(rows)} pairs</p><div class='grid'>{''.join(cards)}</div>{_CHECK_IMAGES}</body></html>"
    )
    return out_html
