"""A static HTML gallery of generated image-report pairs (`index.html` next to `pairs.jsonl`).

Every image is linked by a path relative to the gallery (images the gallery does not own, such
as DICOMs or 16-bit PNGs given to ``generate mode=reports``, get an 8-bit PNG thumbnail beside
it), so the folder can be zipped and opened elsewhere. A header states the provenance (runs,
data, sampler) and a legend explains the agreement marks. :func:`write_showcase` renders the
demo's gallery: its figures against their targets, one card per label vector (a real phantom
with those labels, the seeds as a strip, the reference images used) and the reports written
for real test phantoms beside their own reports.
"""

from __future__ import annotations

import html
from pathlib import Path

import numpy as np

from cxr_irgen.data.labels import CHEXPERT_LABELS, format_labels, labels_to_prompt, parse_labels

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
    from cxr_irgen.utils.files import atomic_path

    pixels = read_image(image, size)[0].numpy()
    out_png.parent.mkdir(parents=True, exist_ok=True)
    with atomic_path(out_png) as tmp:
        Image.fromarray((pixels * 255).round().astype("uint8")).save(tmp, format="PNG")
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


_SHOWCASE_STYLE = """
.summary{border-collapse:collapse;font-size:.85rem;background:#fff;margin:.5rem 0}
.summary td,.summary th{border:1px solid #ddd;padding:.25rem .5rem;text-align:left}
.met{color:#1a7f37;font-weight:600}.unmet{color:#b42318;font-weight:600}
.vector{background:#fff;border-radius:8px;padding:.6rem .8rem;margin:.8rem 0;box-shadow:0 1px 3px #0002}
.row{display:flex;gap:6px;align-items:flex-start;flex-wrap:wrap}
.tile{width:128px;font-size:.7rem;color:#555;text-align:center}
.tile img{width:128px;height:128px;background:#000;border-radius:3px;display:block}
.tile.ref img{width:64px;height:64px;margin:0 auto}
.real{border-right:2px solid #ccc;padding-right:8px;margin-right:4px}
.reports{font-size:.8rem;margin:.3rem 0 0 0;padding-left:1.2rem}
.pair{display:grid;grid-template-columns:128px 1fr 1fr;gap:.8rem;background:#fff;padding:.5rem;border-radius:6px;margin:.4rem 0;font-size:.8rem}
.pair img{width:128px;height:128px;background:#000}
"""
_SHOWCASE_LEGEND = (
    "<p class='labels'><b>legend</b>: each card is one requested label vector. Left of the bar: a <b>real</b> phantom with "
    "exactly these labels (its split named). Right: the <b>generated</b> images, one per seed, each with the mark "
    "<span class='ok'>k/k</span> or <span class='bad'>j/k</span>: how many of the k requested positive/negative observations "
    "its report reproduces (rule-based labeler; uncertain and unmentioned requests not counted). Below each generated image, small: "
    "the <b>reference</b> image (a training phantom with the same labels) it was conditioned on. Under the strip: the reports, one per seed. "
    "Images are shown at 128 px, smoothed (the generated images are the size stated in the header).</p>")


def _rel(path: str | Path, root: Path) -> str:
    """``path`` relative to ``root`` (both resolved) as a URL path; absolute when outside ``root``."""
    import os

    return Path(os.path.relpath(Path(path).resolve(), root.resolve())).as_posix()


def _tile(src: str, caption: str, cls: str = "") -> str:
    return f"<div class='tile {cls}'><img src=\"{html.escape(src)}\" alt=\"{html.escape(caption)}\">{caption}</div>"


def _mark(labels: str, report_labels: str | None) -> str:
    agree, total = label_agreement(labels, report_labels or "")
    return f"<span class='{'ok' if agree == total else 'bad'}'>{agree}/{total}</span>"


def write_showcase(run: Path, plan, pairs: list[dict], n: int, index, report_rows: list[dict], figures: dict, targets: list[tuple]) -> Path:
    """``<run>/gallery.html``: the demo's figures and targets, a legend, one card per label vector, reports of real images.

    ``plan``: the demo's showcase plan (one row per label vector: labels, groups, a real phantom);
    ``pairs``: 06-generate's pairs.jsonl rows (``n`` seeds per vector, in plan order; image relative
    to 06-generate); ``index``: the phantom index (reference images by dicom_id); ``report_rows``:
    08-reports' rows with ``own_report`` and ``labels``. Every image is linked relative to ``run``.
    """
    run = Path(run)
    paths = dict(zip(index["dicom_id"], index["image_path"]))
    summary = "".join(f"<tr><td>{html.escape(name)}</td><td>{value}</td><td>{html.escape(target)}</td>"
                      f"<td class='{'met' if met == 'yes' else 'unmet'}'>{met}</td></tr>" for name, value, target, met in targets)
    signs = "".join(
        f"<tr><td>{html.escape(sign)}</td><td>{html.escape(gen['group'])} vs No Finding</td><td>{_fmt(gen['auroc'])} "
        f"({gen['n_positive']} vs {gen['n_no_finding']})</td><td>{_fmt(figures['signs']['real'][sign]['auroc'])}</td></tr>"
        for sign, gen in figures["signs"]["generated"].items())
    c = figures["classifier_auroc"]
    scored = ", ".join(c.get("pathologies") or []) or "pathology"  # the pathologies both means are over
    header = (f"<p>{figures['n_pairs']} generated pairs at {figures['image_size']} px, {len(plan)} label vectors × {n} seeds; "
              f"demo seed {figures.get('seed')}, wall {figures.get('wall_s')} s. Report decoding: {html.escape(_decoding_line(figures.get('decoding')))}{_redrawn_note(figures)}.</p>"
              f"<table class='summary'><tr><th>figure</th><th>value</th><th>target</th><th>met</th></tr>{summary}</table>"
              f"<table class='summary'><tr><th>phantom sign</th><th>groups</th><th>AUROC generated (n)</th><th>AUROC real phantoms</th></tr>{signs}"
              f"<tr><td>demo classifier, mean AUROC</td><td>{html.escape(scored)} vs No Finding</td><td>{_fmt(c['generated_mean'])}</td><td>{_fmt(c['real_mean'])} (test)</td></tr></table>")
    records = plan.to_dict("records")
    cards = []
    for v in _interleaved([row["groups"].split(", ")[0] for row in records]):
        row = records[v]
        vec = np.array([row[name] for name in CHEXPERT_LABELS], dtype=np.float32)
        mine = pairs[v * n:(v + 1) * n]
        tiles = [_tile(_rel(row["image_path"], run), f"real ({row['split']})", "real")]
        tiles += [_tile(_rel(run / "06-generate" / p["image"], run), f"seed {p['seed']} {_mark(p['labels'], p.get('report_labels'))}") for p in mine]
        refs = [_tile(_rel(paths[p["reference_id"]], run), "reference", "ref") if p.get("reference_id") in paths else "<div class='tile ref'></div>" for p in mine]
        reports = "".join(f"<li>{html.escape(p.get('report') or '')}</li>" for p in mine)
        cards.append(f"<div class='vector'><div class='labels'><b>{html.escape(row['groups'])}</b> · {html.escape(format_labels(vec))}</div>"
                     f"<div class='prompt'>{html.escape(labels_to_prompt(vec))}</div><div class='row'>{''.join(tiles)}</div>"
                     f"<div class='row'><div class='tile real'></div>{''.join(refs)}</div><ol class='reports'>{reports}</ol></div>")
    real_reports = "".join(
        f"<div class='pair'><img src=\"{html.escape(_rel(r['image'], run))}\" alt='test phantom'>"
        f"<div><b>its own report</b> ({html.escape(r['labels'] or 'no labels')})<br>{html.escape(r.get('own_report') or '—')}</div>"
        f"<div><b>generated report</b> {_mark(r['labels'] or '', r.get('report_labels'))}<br>{html.escape(r.get('report') or '')}</div></div>"
        for r in report_rows)
    out = run / "gallery.html"
    out.write_text(
        f"<!doctype html><html><head><meta charset='utf-8'><title>cxr-irgen demo</title><style>{_STYLE}{_SHOWCASE_STYLE}</style></head>"
        f"<body><h1>cxr-irgen demo: generated chest X-ray phantoms and reports</h1>{header}{_SHOWCASE_LEGEND}"
        f"{''.join(cards)}<h1>Reports written for real held-out test phantoms</h1>"
        f"<p class='labels'>Each row: the test phantom, its own report (findings) and labels, and the report the language module wrote "
        f"for it, marked as above against the phantom's labels.</p>{real_reports}{_CHECK_IMAGES}</body></html>")
    return out


def _redrawn_note(figures: dict) -> str:
    share = figures.get("redrawn_share")
    return f"; {100 * share:.0f}% of the reports drawn again, more freely, because a draw copied a training report" if share else ""


def _decoding_line(decoding: dict | None) -> str:
    if not decoding:
        return "none"
    keys = ("num_beams", "do_sample", *(("top_p", "top_k") if decoding.get("do_sample") else ()), "no_repeat_ngram_size", "max_new_tokens")
    return ", ".join(f"{key} {decoding[key]}" for key in keys if key in decoding)


def _interleaved(groups: list[str]) -> list[int]:
    """Indices of ``groups`` taking one of each group in turn (first group first), so the first screen shows every group."""
    queues: dict[str, list[int]] = {}
    for i, group in enumerate(groups):
        queues.setdefault(group, []).append(i)
    order = []
    while any(queues.values()):
        order += [queue.pop(0) for queue in queues.values() if queue]
    return order


def _fmt(value) -> str:
    return "—" if value is None else f"{value:.3f}"
