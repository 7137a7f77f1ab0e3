"""The layout stage of the workflow: a shard's figure images -> panels, panel letters, panel kinds.

``results/<shard>/layout/`` holds:

``panels.parquet`` (one row per panel)
    ============ ============= ==========================================================
    column       type          meaning
    ============ ============= ==========================================================
    figure_id    string        ``figures.parquet``'s id
    panel_index  int32         0-based; letter order when every panel of the figure has a
                               letter, else reading order (rows top to bottom, left to right)
    bbox         list<int32>   [x1, y1, x2, y2] in pixels of the figure image, x2/y2 exclusive;
                               tight around the panel's content, its letter excluded when the
                               letter stands outside it
    label        string/null   printed panel letter without brackets (``A``, ``b``), null if none
    label_bbox   list<int32>   the printed letter incl. brackets, null if none
    kind         string        ``image`` | ``chart`` | ``diagram`` | ``other``
    score        float32       heuristic panel confidence in [0, 1] (see ``layout.parse``)
    kind_score   float32       heuristic kind confidence in [0, 1]
    method       string        how the box was found: ``xy-cut`` (gutter cut), ``components``
                               (interleaved layout), ``whole`` (whole image), ``proposals``
                               (from the learned detector's boxes: ``layout.method`` detector
                               or combined)
    crop_path    string        the panel crop, relative to the layout folder
                               (``crops/<figure_id>__p<panel_index>.png`` or ``.jpg``)
    ============ ============= ==========================================================

``skips.parquet`` (one row per figure that gave no panels)
    figure_id, reason (``missing-image`` | ``unreadable-image`` | ``error``), detail.

``crops/``: one image per panel, cut from the full-resolution figure.
"""

from __future__ import annotations

import logging
import time
from pathlib import Path

import pandas as pd
import pyarrow as pa
from PIL import Image, UnidentifiedImageError

from .. import tracking
from ..ingest.images import pixel_limit, to_rgb
from ..ingest.tables import read_table, write_table
from .parse import load_method, parse_figure

log = logging.getLogger(__name__)

PANELS = pa.schema([
    ("figure_id", pa.string()),
    ("panel_index", pa.int32()),
    ("bbox", pa.list_(pa.int32())),
    ("label", pa.string()),
    ("label_bbox", pa.list_(pa.int32())),
    ("kind", pa.string()),
    ("score", pa.float32()),
    ("kind_score", pa.float32()),
    ("method", pa.string()),
    ("crop_path", pa.string()),
])
SKIPS = pa.schema([("figure_id", pa.string()), ("reason", pa.string()), ("detail", pa.string())])

DEFAULTS = {"reader": "glyph", "max_side": 1000, "crop_format": "png", "jpeg_quality": 92,
            "max_image_pixels": 200_000_000, "method": "splitter", "detector_weights": None}


def _open(path: Path, max_pixels: int) -> Image.Image:
    img = Image.open(path)
    if img.width * img.height > max_pixels:
        raise ValueError(f"{img.width}x{img.height} pixels is more than layout.max_image_pixels")
    img.load()
    return to_rgb(img)


def layout_figure(figure_id: str, image_path: Path, crops_dir: Path, cfg: dict,
                  detector=None) -> tuple[list[dict], dict | None]:
    """Panel rows of one figure (crops written), or ([], skip row). ``detector``: the model
    ``cfg["method"]`` needs (:func:`.parse.load_method`)."""
    if not image_path.is_file():
        return [], {"figure_id": figure_id, "reason": "missing-image", "detail": str(image_path)}
    try:
        img = _open(image_path, int(cfg["max_image_pixels"]))
    except (UnidentifiedImageError, OSError, ValueError, Image.DecompressionBombError) as exc:
        return [], {"figure_id": figure_id, "reason": "unreadable-image", "detail": f"{type(exc).__name__}: {exc}"}
    try:
        res = parse_figure(img, reader=cfg["reader"], max_side=int(cfg["max_side"]),
                           method=cfg["method"], detector=detector)
    except Exception as exc:  # a bug on one figure must not stop the shard
        log.exception("layout failed on %s", figure_id)
        return [], {"figure_id": figure_id, "reason": "error", "detail": f"{type(exc).__name__}: {exc}"}
    ext = "jpg" if cfg["crop_format"] == "jpeg" else "png"
    rows = []
    for i, p in enumerate(res["panels"]):
        x1, y1, x2, y2 = p["bbox"]
        if x2 <= x1 or y2 <= y1:
            continue
        rel = f"crops/{figure_id}__p{i}.{ext}"
        crop = img.crop((x1, y1, x2, y2))
        if ext == "jpg":
            crop.save(crops_dir.parent / rel, quality=int(cfg["jpeg_quality"]))
        else:
            crop.save(crops_dir.parent / rel, compress_level=1)
        rows.append({"figure_id": figure_id, "panel_index": i, "bbox": p["bbox"], "label": p["label"],
                     "label_bbox": p["label_bbox"], "kind": p["kind"], "score": p["score"],
                     "kind_score": p["kind_score"], "method": p["method"], "crop_path": rel})
    return rows, None


def run_layout_shard(figures_parquet: str | Path, ingest_dir: str | Path, out_dir: str | Path, shard: str,
                     results_dir: str | Path = "results", tracking_cfg: dict | None = None,
                     cfg: dict | None = None) -> dict:
    """Lay out every figure of one shard; write ``panels.parquet``, ``skips.parquet``, ``crops/``.

    ``cfg["method"]``: ``splitter`` (image analysis), ``detector`` or ``combined`` (these two load
    the learned detector from ``cfg["detector_weights"]`` once, sha256-checked against its
    sidecar; the sha256 is tagged on the MLflow run as ``detector.sha256``)."""
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    cfg = {**DEFAULTS, **(cfg or {})}
    detector = load_method(cfg["method"], cfg["detector_weights"])
    out_dir = Path(out_dir)
    ingest_dir = Path(ingest_dir)
    crops = out_dir / "crops"
    crops.mkdir(parents=True, exist_ok=True)
    with tracking.stage_run("layout", shard, {"layout": cfg}, results_dir, tracking_cfg) as run:
        t0 = time.perf_counter()
        import pyarrow.parquet as pq

        cols = ["figure_id", "article_id", "image_path", "image_sha256"]  # article_id: in ingest's tables
        figs = read_table(figures_parquet, columns=[c for c in cols if c in pq.read_schema(figures_parquet).names])
        run.log_manifest(figs, name=f"{shard}-figures")  # the figures laid out: ids, image path, sha256
        if detector is not None:
            import mlflow

            mlflow.set_tag("detector.sha256", (detector.p2p_meta or {}).get("sha256") or "unknown")
        panels, skips = [], []
        per_fig = []
        for row in figs.itertuples(index=False):
            t = time.perf_counter()
            with pixel_limit(int(cfg["max_image_pixels"])):  # PIL's own default would cap it (crops too)
                rows, skip = layout_figure(row.figure_id, ingest_dir / row.image_path, crops, cfg, detector)
            per_fig.append(time.perf_counter() - t)
            panels.extend(rows)
            if skip:
                skips.append(skip)
        paths = {"panels": out_dir / "panels.parquet", "skips": out_dir / "skips.parquet", "crops": crops}
        write_table(panels, PANELS, paths["panels"])
        write_table(skips, SKIPS, paths["skips"])
        lettered = {r["figure_id"] for r in panels if r["label"]}
        kinds = pd.Series([r["kind"] for r in panels], dtype="object").value_counts().to_dict()
        stats = {"figures": len(figs), "figures_with_panels": len({r["figure_id"] for r in panels}),
                 "figures_lettered": len(lettered), "panels": len(panels), "skips": len(skips),
                 "kinds": {k: int(v) for k, v in kinds.items()},
                 "ms_per_figure_median": round(1000 * float(pd.Series(per_fig).median()), 1) if per_fig else 0.0,
                 "seconds": round(time.perf_counter() - t0, 3)}
        run.log_metrics(stats)
        run.log_outputs(paths)
    log.info("layout %s: %s", shard, stats)
    return stats
