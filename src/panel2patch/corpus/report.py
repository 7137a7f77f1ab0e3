"""The corpus QC report: one self-contained HTML page (``<out>/index.html`` + ``<out>/img/``).

It shows, for a sample of figures, the figure with its panel boxes (colour per panel, ``index:label
kind``), printed-letter boxes (magenta), markers (cyan, tip as a dot) and patches (yellow) drawn on
it, next to the texts each level got and why a pair was dropped; then counts per stage and level,
skip and drop reasons, the supervision yield, and histograms (panels per figure, patches per panel,
text length per level). Sample: figures with patches first, then those with most panels (ties by
id), so a reviewer sees the hard cases at a glance.
"""

from __future__ import annotations

import html
import json
import logging
from collections import Counter
from pathlib import Path

import pandas as pd
from PIL import Image, ImageDraw, ImageFont

from ..ingest.images import to_rgb
from ..ingest.tables import read_table
from .pairs import LEVELS

log = logging.getLogger(__name__)

PALETTE = ["#e6194b", "#3cb44b", "#4363d8", "#f58231", "#911eb4", "#46f0f0", "#f032e6", "#9a6324", "#800000",
           "#008080", "#000075", "#808000"]
VIEW_SIDE = 1100  # long side of the drawn figures


def _read(results: Path, shards: list[str], rel: str) -> pd.DataFrame:
    frames = [read_table(results / s / rel).assign(shard=s) for s in shards if (results / s / rel).exists()]
    frames = [f for f in frames if len(f)]
    return pd.concat(frames, ignore_index=True) if frames else pd.DataFrame()


def _esc(x) -> str:
    return "" if x is None else html.escape(str(x))


def _table(header: list[str], rows: list[list]) -> str:
    head = "".join(f"<th>{_esc(h)}</th>" for h in header)
    body = "".join("<tr>" + "".join(f"<td>{c if isinstance(c, _Raw) else _esc(c)}</td>" for c in r) + "</tr>" for r in rows)
    return f"<table><tr>{head}</tr>{body}</table>"


class _Raw(str):
    """Table cell already in HTML."""


def _clip(text, n: int = 320) -> _Raw:
    """Long texts folded: the last ``n`` characters (a subcaption's own part ends the text) shown,
    the whole text one click away."""
    if not text:
        return _Raw("")
    if len(text) <= n:
        return _Raw(_esc(text))
    return _Raw(f"<details><summary>…{_esc(text[-n:])}</summary>{_esc(text)}</details>")


def histogram(values: list[float], title: str, bins: list[float] | None = None, width: int = 360, height: int = 140) -> str:
    """An inline SVG bar chart of ``values`` (integer bins when ``bins`` is None)."""
    if not values:
        return f"<figure><figcaption>{_esc(title)}: no data</figcaption></figure>"
    if bins is None:
        lo, hi = int(min(values)), int(max(values))
        labels = list(range(lo, hi + 1))
        counts = Counter(int(v) for v in values)
        heights, names = [counts.get(v, 0) for v in labels], [str(v) for v in labels]
    else:
        heights = [sum(lo <= v < hi for v in values) for lo, hi in zip(bins, bins[1:])]
        names = [f"{int(lo)}" for lo in bins[:-1]]
    top, n = max(heights) or 1, len(heights)
    bw = (width - 40) / n
    bars = []
    for i, (h, name) in enumerate(zip(heights, names)):
        bh = (height - 40) * h / top
        x = 30 + i * bw
        bars.append(f'<rect x="{x:.1f}" y="{height - 20 - bh:.1f}" width="{max(bw - 2, 1):.1f}" height="{bh:.1f}" fill="#4363d8">'
                    f"<title>{_esc(name)}: {h}</title></rect>")
        if n <= 16 or i % max(1, n // 8) == 0:
            bars.append(f'<text x="{x + bw / 2:.1f}" y="{height - 6}" font-size="10" text-anchor="middle">{_esc(name)}</text>')
    bars.append(f'<text x="2" y="12" font-size="10">{top}</text>')
    return (f'<figure><svg width="{width}" height="{height}" role="img">{"".join(bars)}</svg>'
            f"<figcaption>{_esc(title)} (n = {len(values)})</figcaption></figure>")


def draw_figure(image_path: Path, panels: pd.DataFrame, markers: pd.DataFrame, patches: pd.DataFrame, out: Path) -> None:
    """The figure with panels, letters, markers and patches drawn on it, saved as JPEG (tables as
    :func:`~panel2patch.ingest.tables.read_table` gives them: missing values None)."""
    img = to_rgb(Image.open(image_path))
    scale = min(1.0, VIEW_SIDE / max(img.size))
    if scale < 1:
        img = img.resize((round(img.width * scale), round(img.height * scale)), Image.Resampling.BILINEAR)
    draw = ImageDraw.Draw(img)
    lw = max(2, round(3 * max(img.size) / VIEW_SIDE))
    font = ImageFont.load_default(size=16)

    def box(b):
        return [v * scale for v in b]

    for p in panels.itertuples():
        colour = PALETTE[int(p.panel_index) % len(PALETTE)]
        b = box(p.bbox)
        draw.rectangle(b, outline=colour, width=lw)
        draw.text((b[0] + lw + 2, b[1] + lw + 1), f"{p.panel_index}:{p.label or '-'} {p.kind}", fill=colour,
                  font=font, stroke_width=2, stroke_fill="white")
        if p.label_bbox is not None:
            draw.rectangle(box(p.label_bbox), outline="#ff00ff", width=max(1, lw - 1))
    for m in markers.itertuples():
        draw.rectangle(box(m.bbox), outline="#00e5ff", width=lw)
        if m.tip is not None:
            x, y = m.tip[0] * scale, m.tip[1] * scale
            draw.ellipse([x - 3, y - 3, x + 3, y + 3], fill="#00e5ff")
    for r in patches.itertuples():
        if r.bbox is not None:
            draw.rectangle(box(r.bbox), outline="#ffd700", width=lw)
            draw.text((box(r.bbox)[0] + 2, box(r.bbox)[1] + 1), f"r{int(r.patch_index)}", fill="#ffd700",
                      font=font, stroke_width=2, stroke_fill="black")
    out.parent.mkdir(parents=True, exist_ok=True)
    img.save(out, "JPEG", quality=85)


def _of(df: pd.DataFrame, figure_id: str, shard: str) -> pd.DataFrame:
    return df[(df.figure_id == figure_id) & (df.shard == shard)] if len(df) else df


def pick_figures(pairs: pd.DataFrame, n: int) -> list[tuple[str, str]]:
    """(figure_id, shard) of the figures to draw (a figure id is unique only within its shard: the
    same article ingested twice has the same ids in two shards)."""
    figs = pairs[pairs.level == "figure"]
    n_panels = pairs[pairs.level == "panel"].groupby(["figure_id", "shard"]).size()
    n_patches = pairs[pairs.level == "patch"].groupby(["figure_id", "shard"]).size()
    return sorted(zip(figs.figure_id, figs.shard),
                  key=lambda k: (-int(n_patches.get(k, 0) > 0), -int(n_panels.get(k, 0)), k))[:n]


CSS = """body{font-family:sans-serif;margin:1.5em;max-width:1500px}table{border-collapse:collapse;margin:.5em 0}
td,th{border:1px solid #ccc;padding:2px 6px;font-size:13px;vertical-align:top;text-align:left}
.fig{display:flex;align-items:flex-start;gap:1em;border-top:2px solid #888;padding:1em 0}
.fig img{flex:0 0 auto;max-width:58%;height:auto;border:1px solid #ccc}
.texts{flex:1;font-size:13px}.drop{color:#b00}.keep{color:#070}figure{display:inline-block;margin:.5em}
.legend span{padding:0 .4em;margin-right:.5em;border:2px solid}"""


def write_report(results_dir: str | Path, shards: list[str], out_dir: str | Path, n_figures: int = 12) -> Path:
    """Write ``<out_dir>/index.html`` from the stage tables under ``results_dir``; returns its path."""
    results, out = Path(results_dir), Path(out_dir)
    (out / "img").mkdir(parents=True, exist_ok=True)
    pairs = read_table(results / "corpus" / "pairs.parquet")
    yld = json.loads((results / "corpus" / "yield.json").read_text())
    manifest = read_table(results / "corpus" / "manifest.parquet")
    summary = json.loads((results / "ingest" / "summary.json").read_text())
    figures = _read(results, shards, "ingest/figures.parquet")
    ingest_skips = _read(results, shards, "ingest/skips.parquet")
    panels = _read(results, shards, "layout/panels.parquet")
    layout_skips = _read(results, shards, "layout/skips.parquet")
    subs = _read(results, shards, "text/subcaptions.parquet")
    phrases = _read(results, shards, "text/markers.parquet")
    markers = _read(results, shards, "markers/markers.parquet")
    patches = _read(results, shards, "markers/patches.parquet")
    markers_skips = _read(results, shards, "markers/skips.parquet")
    parts = [f"<h1>panel2patch corpus QC report</h1><p>{len(shards)} shard(s) under <code>{_esc(results)}</code>.</p>"]

    # ------------------------------------------------------------------ counts per stage and level
    real_patches = patches[patches.patch_index.notna()] if len(patches) else patches
    stage_rows = [
        ["ingest", f"{summary.get('articles', 0)} articles, {summary.get('figures', len(figures))} figures", len(ingest_skips)],
        ["layout", f"{len(panels)} panels in {panels.figure_id.nunique() if len(panels) else 0} figures", len(layout_skips)],
        ["text", f"{len(subs)} subcaption keys, {len(phrases)} marker phrases", ""],
        ["markers", f"{len(markers)} markers, {len(real_patches)} patches "
                    f"({int(real_patches.paired.sum()) if len(real_patches) else 0} paired with a phrase)", len(markers_skips)],
        ["corpus", f"{len(pairs)} candidate pairs, {int(pairs.keep.sum())} kept in {len(manifest)} shard(s)", ""],
    ]
    parts.append("<h2>Counts per stage</h2>" + _table(["stage", "output", "skips"], stage_rows))
    level_rows = []
    for lvl in LEVELS:
        g = pairs[pairs.level == lvl]
        by_split = g[g.keep].split.value_counts()
        level_rows.append([lvl, len(g), int(g.keep.sum()), *(int(by_split.get(s, 0)) for s in ("train", "val", "test"))])
    parts.append("<h2>Pairs per level</h2>" + _table(["level", "candidates", "kept", "train", "val", "test"], level_rows))
    per = yld["per_figure"]
    parts.append(f"<h2>Supervision yield</h2><p>{yld['source_figures']} source figures (of {yld['ingested_figures']} "
                 f"ingested) give {sum(yld['pairs'].values())} pairs: <b>{per['all']:.2f} per figure</b> "
                 f"(figure {per['figure']:.2f}, panel {per['panel']:.2f}, patch {per['patch']:.2f}).</p>")
    drops = pairs[~pairs.keep].groupby(["level", "drop_reason"]).size().reset_index(name="n")
    parts.append("<h2>Dropped pairs</h2>" + _table(["level", "reason", "pairs"], drops.values.tolist()))
    skip_rows = []
    for stage, df in (("ingest", ingest_skips), ("layout", layout_skips), ("markers", markers_skips)):
        if len(df):
            for reason, n in df.reason.value_counts().items():
                example = df[df.reason == reason].iloc[0]
                skip_rows.append([stage, reason, n, example.get("detail", "")])
    parts.append("<h2>Skip reasons</h2>" + (_table(["stage", "reason", "count", "example"], skip_rows) if skip_rows else "<p>none</p>"))
    parts.append("<h2>Shards</h2>" + _table(list(manifest.columns.drop("path")), manifest.drop(columns="path").values.tolist()))

    # ------------------------------------------------------------------------------- histograms
    fig_keys = pd.MultiIndex.from_frame(figures[["figure_id", "shard"]]) if len(figures) else None  # ids: per shard
    n_pan = panels.groupby(["figure_id", "shard"]).size().reindex(fig_keys, fill_value=0).tolist() if len(figures) else []
    n_pat = (real_patches.groupby(["figure_id", "shard", "panel_index"]).size() if len(real_patches) else pd.Series(dtype=int))
    per_panel = [int(n_pat.get((p.figure_id, p.shard, p.panel_index), 0)) for p in panels.itertuples()] if len(panels) else []
    hist = [histogram(n_pan, "panels per figure"), histogram(per_panel, "patches per panel")]
    for lvl in LEVELS:
        lengths = [len(t) for t in pairs[(pairs.level == lvl) & pairs.keep].text.dropna()]
        hist.append(histogram(lengths, f"text length, {lvl} pairs (characters)", bins=[0, 25, 50, 100, 200, 400, 800, 1600, 3200, 10**6]))
    parts.append("<h2>Histograms</h2>" + "".join(hist))

    # ------------------------------------------------------------------------------ sample figures
    parts.append("<h2>Sample figures</h2><p class='legend'><span style='border-color:#e6194b'>panel (index:label kind)"
                 "</span><span style='border-color:#ff00ff'>printed letter</span><span style='border-color:#00e5ff'>"
                 "marker (dot: tip)</span><span style='border-color:#ffd700'>patch</span></p>")
    fig_by = figures.set_index(["figure_id", "shard"]) if len(figures) else None
    picked = pick_figures(pairs, n_figures)
    for fid, shard in picked:
        f = fig_by.loc[(fid, shard)]
        img_rel = f"img/{fid}.jpg" if sum(k[0] == fid for k in picked) == 1 else f"img/{fid}.{shard}.jpg"
        try:
            draw_figure(results / shard / "ingest" / f.image_path,
                        *(_of(df, fid, shard) for df in (panels, markers, real_patches)), out / img_rel)
            img_html = f'<img src="{_esc(img_rel)}" alt="{_esc(fid)}">'
        except (OSError, ValueError) as e:  # a broken image must not break the report
            img_html = f"<p class='drop'>cannot draw {_esc(fid)}: {_esc(e)}</p>"
        fp = pairs[(pairs.figure_id == fid) & (pairs.shard == shard)]
        rows = []
        for r in fp.itertuples():
            state = _Raw("<span class='keep'>kept</span>") if r.keep else _Raw(
                f"<span class='drop'>{_esc(r.drop_reason)}</span>")
            where = r.level if r.level == "figure" else (
                f"panel {int(r.panel_index)}" if r.level == "panel" else f"patch r{int(r.patch_index)} (panel {int(r.panel_index)})")
            rows.append([where, r.label if r.level != "figure" else "", r.kind or "", r.method,
                         f"{r.confidence:.2f}", state, r.split or "", _clip(r.text)])
        parts.append(f"<div class='fig'>{img_html}<div class='texts'><h3>{_esc(fid)} <small>({_esc(shard)})</small></h3>"
                     f"<p>{_esc(fp[fp.level == 'figure'].licence_code.iloc[0] or 'no licence')} · {_esc(f.source_kind)} · {_esc(f.article_id)}</p>"
                     + _table(["pair", "label", "kind", "method", "conf", "state", "split", "text"], rows) + "</div></div>")
    page = f"<!doctype html><html><head><meta charset='utf-8'><title>panel2patch QC</title><style>{CSS}</style></head><body>{''.join(parts)}</body></html>"
    path = out / "index.html"
    path.write_text(page, encoding="utf-8")
    log.info("report: %s (%d figures drawn)", path, min(n_figures, len(pairs[pairs.level == "figure"])))
    return path


def inline_report(index_html: str | Path, out_html: str | Path) -> Path:
    """One HTML file holding the report of ``index_html`` with its ``img/`` images inlined as data
    URIs (for ``snakemake --report report.html``, which takes files, not folders)."""
    import base64
    import re

    index_html = Path(index_html)
    mime = {".jpg": "image/jpeg", ".jpeg": "image/jpeg", ".png": "image/png"}

    def data_uri(m: re.Match) -> str:
        path = index_html.parent / html.unescape(m.group(1))
        if path.suffix.lower() not in mime or not path.is_file():
            return m.group(0)
        return f'src="data:{mime[path.suffix.lower()]};base64,{base64.b64encode(path.read_bytes()).decode()}"'

    text = re.sub(r'src="(img/[^"]+)"', data_uri, index_html.read_text(encoding="utf-8"))
    Path(out_html).write_text(text, encoding="utf-8")
    return Path(out_html)
