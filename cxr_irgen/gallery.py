"""A static HTML gallery of generated image-report pairs (`index.html` next to `pairs.jsonl`).

Every image is linked by a path relative to the gallery (images the gallery does not own, such
as DICOMs or 16-bit PNGs given to ``generate mode=reports``, get an 8-bit PNG thumbnail beside
it), so the folder can be zipped and opened elsewhere. A header states the provenance (runs,
data, sampler) and a legend explains the agreement marks.
"""

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
.provenance{font-size:.8rem;color:#444;background:#fff;padding:.6rem;border-radius:6px}
.warning{background:#fff4e5;border-left:4px solid #b54708;padding:.4rem;font-size:.8rem;margin:.4rem 0}
"""
_LEGEND = ("<p class='labels'><b>legend</b>: <span class='ok'>agree k/k</span> the report's own labels (rule-based labeler) reproduce "
           "every requested positive/negative observation; <span class='bad'>agree j/k</span> only j of the k requested observations "
           "are reproduced. Uncertain and unmentioned requests are not counted.</p>")
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


def write_thumbnail(image: str | Path, out_png: Path, size: int = 256) -> Path:
    """An 8-bit PNG of any readable radiograph (DICOM, 16-bit PNG, JPEG), shorter side ``size``; returns ``out_png``."""
    from PIL import Image

    from cxr_irgen.data.imageio import read_image

    pixels = read_image(image, size)[0].numpy()
    out_png.parent.mkdir(parents=True, exist_ok=True)
    tmp = out_png.with_suffix(".tmp.png")
    Image.fromarray((pixels * 255).round().astype("uint8")).save(tmp)
    tmp.replace(out_png)
    return out_png


def _provenance_html(info: dict) -> str:
    lines = []
    for key in ("vision", "language"):
        run = info.get(key)
        if run:
            lines.append(f"<b>{key}</b>: {html.escape(run['what'])} {html.escape(run['run'])} (data {html.escape(str(run['data']))} "
                         f"{html.escape(str(run['data_root']))}, {run['steps']} steps)")
    if info.get("sampler"):
        s = info["sampler"]
        lines.append(f"<b>sampler</b>: {html.escape(s['scheduler'])}, {s['steps']} steps, guidance {s['guidance']}, seed {s['seed']} + pair index")
    if info.get("mode") != "reports":
        pool = info.get("reference_pool")
        lines.append("<b>reference images</b>: " + ("none (text-only conditioning)" if pool is None else
                     html.escape(f"{pool['data']} {pool['root']}, {pool['selection']}" + (f", first {pool['max_images']}" if pool["max_images"] else "") + f" ({pool['from']})")))
    if info.get("skipped_images"):
        lines.append(f"<b>skipped bad images</b>: {len(info['skipped_images'])} ({html.escape(', '.join(s['image'] for s in info['skipped_images']))})")
    return "<div class='provenance'>" + "<br>".join(lines) + "</div>"


def write_gallery(rows: list[dict], out_html: Path, info: dict | None = None, title: str = "cxr-irgen: generated image-report pairs") -> Path:
    """Render rows of pairs.jsonl (keys: image or thumbnail, labels, prompt, report, report_labels) to ``out_html``.

    ``image`` / ``thumbnail`` are relative to the gallery; ``info`` is generate's provenance (header, card warning).
    """
    info = info or {}
    warning = f"<div class='warning'>{html.escape(info['warning'])}</div>" if info.get("warning") else ""
    cards = []
    for row in rows:
        src = row.get("thumbnail") or row.get("image")
        parts = [f'<img src="{html.escape(src)}" alt="{html.escape(row.get("labels") or "")}">'] if src else []
        if warning:
            parts.append(warning)
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
        f"<body><h1>{html.escape(title)}</h1><p>{len(rows)} pairs</p>{_provenance_html(info)}{warning}{_LEGEND}<div class='grid'>{''.join(cards)}</div>{_CHECK_IMAGES}</body></html>"
    )
    return out_html
