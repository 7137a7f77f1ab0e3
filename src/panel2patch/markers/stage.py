"""The markers stage of the workflow: a shard's image panels -> visual markers, patches, and
patch-phrase pairs (through the caption's marker phrases from the text stage).

``results/<shard>/markers/`` holds:

``markers.parquet`` (one row per detected marker)
    figure_id, marker_index (int32, per figure), panel_index (int32, layout's index), type
    (``arrow`` | ``arrowhead`` | ``asterisk`` | ``other``), bbox (list<int32>, figure pixels,
    x2/y2 exclusive), colour (string/null), tip (list<float64>/null), direction (list<float64>/null,
    unit vector in image axes), score (float32)

``patches.parquet`` (one row per patch, then one per caption marker phrase no patch took)
    figure_id, patch_index (int32/null), panel_index (int32/null), bbox (list<int32>/null),
    marker_indices (list<int32>), score (float32), phrase_index (int32/null: row of the text
    stage's ``markers.parquet`` for this figure), phrase (string/null), paired (bool),
    reason (string/null: why a patch has no phrase or a phrase no patch), crop_path (string/null,
    relative to the markers folder)

``crops/``: one image per patch. ``skips.parquet``: figure_id, reason, detail.
"""

from __future__ import annotations

import logging
import time
from pathlib import Path

import pandas as pd
import pyarrow as pa
from PIL import Image

from .. import tracking
from ..align.panels import align_patches
from ..ingest.images import ImageSkip, open_image, to_rgb
from ..ingest.tables import read_table, write_table
from .detect import figure_markers

log = logging.getLogger(__name__)

MARKERS = pa.schema([("figure_id", pa.string()), ("marker_index", pa.int32()), ("panel_index", pa.int32()),
                     ("type", pa.string()), ("bbox", pa.list_(pa.int32())), ("colour", pa.string()),
                     ("tip", pa.list_(pa.float64())), ("direction", pa.list_(pa.float64())), ("score", pa.float32())])
PATCHES = pa.schema([("figure_id", pa.string()), ("patch_index", pa.int32()), ("panel_index", pa.int32()),
                     ("bbox", pa.list_(pa.int32())), ("marker_indices", pa.list_(pa.int32())), ("score", pa.float32()),
                     ("phrase_index", pa.int32()), ("phrase", pa.string()), ("paired", pa.bool_()),
                     ("reason", pa.string()), ("crop_path", pa.string())])
SKIPS = pa.schema([("figure_id", pa.string()), ("reason", pa.string()), ("detail", pa.string())])

DEFAULTS = {"kinds": ["image"], "max_image_pixels": 200_000_000, "detect": {}, "patches": {}}


def markers_figure(figure_id: str, img: Image.Image, panels: pd.DataFrame, phrases: pd.DataFrame, out_dir: Path,
                   cfg: dict) -> tuple[list[dict], list[dict]]:
    """Marker and patch rows of one figure (patch crops written under ``out_dir/crops``); ``panels``
    and ``phrases`` as :func:`~panel2patch.ingest.tables.read_table` gives them (missing values None)."""
    layout = {"panels": [{"bbox": list(p.bbox), "label_bbox": None if p.label_bbox is None else list(p.label_bbox),
                          "kind": p.kind, "label": p.label} for p in panels.itertuples()]}
    res = figure_markers(img, params=cfg["detect"] or None, patch_params=cfg["patches"] or None, layout=layout,
                         kinds=tuple(cfg["kinds"]))
    mrows = [{"figure_id": figure_id, "marker_index": i, "panel_index": int(panels.panel_index.iloc[m["panel_index"]]),
              "type": m["type"], "bbox": [int(v) for v in m["bbox"]], "colour": m.get("colour"), "tip": m.get("tip"),
              "direction": m.get("direction"), "score": m["score"]} for i, m in enumerate(res["markers"])]
    # a patch's type and colour are its first marker's; its panel letter comes from the layout
    labels = list(panels.label)
    plist = [{"index": i, "panel_label": labels[pt["panel_index"]], "type": res["markers"][pt["marker_indices"][0]]["type"],
              "colour": res["markers"][pt["marker_indices"][0]].get("colour")} for i, pt in enumerate(res["patches"])]
    phrase_list = [{"type": r.type, "colour": r.colour, "count": None if r.count is None else int(r.count),
                    "labels": list(r.labels), "phrase": r.phrase} for r in phrases.itertuples()]
    prows = []
    for pair in align_patches(plist, phrase_list):
        i = pair["patch_index"]
        pt = res["patches"][i] if i is not None else None
        crop = None
        if pt is not None:
            crop = f"crops/{figure_id}__r{i}.png"
            img.crop(tuple(pt["bbox"])).save(out_dir / crop, compress_level=1)
        prows.append({"figure_id": figure_id, "patch_index": i,
                      "panel_index": None if pt is None else int(panels.panel_index.iloc[pt["panel_index"]]),
                      "bbox": None if pt is None else [int(v) for v in pt["bbox"]],
                      "marker_indices": [] if pt is None else list(pt["marker_indices"]),
                      "score": pair["score"] if pt is None else pt.get("score", pair["score"]),
                      "phrase_index": pair["marker_index"], "phrase": pair["phrase"], "paired": pair["paired"],
                      "reason": pair["reason"], "crop_path": crop})
    return mrows, prows


def run_markers_shard(figures: str | Path, panels: str | Path, phrases: str | Path, out_dir: str | Path, shard: str,
                      results_dir: str | Path = "results", tracking_cfg: dict | None = None, cfg: dict | None = None) -> dict:
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    cfg = {**DEFAULTS, **(cfg or {})}
    out_dir = Path(out_dir)
    (out_dir / "crops").mkdir(parents=True, exist_ok=True)
    ingest_dir = Path(figures).parent
    with tracking.stage_run("markers", shard, {"markers": cfg}, results_dir, tracking_cfg) as run:
        t0 = time.perf_counter()
        figs = read_table(figures, columns=["figure_id", "image_path"])
        pan_by = dict(tuple(read_table(panels).groupby("figure_id")))
        phr = read_table(phrases)
        phr_by = dict(tuple(phr.groupby("figure_id")))
        markers, patches, skips = [], [], []
        for fig in figs.itertuples():
            fp = pan_by.get(fig.figure_id)
            if fp is None or not fp.kind.isin(cfg["kinds"]).any():
                continue  # no panel of a kind that carries markers
            try:
                img = to_rgb(open_image(ingest_dir / fig.image_path, int(cfg["max_image_pixels"])))
                m, p = markers_figure(fig.figure_id, img, fp.sort_values("panel_index"),
                                      phr_by.get(fig.figure_id, phr.iloc[0:0]), out_dir, cfg)
            except ImageSkip as exc:
                skips.append({"figure_id": fig.figure_id, "reason": exc.reason, "detail": str(exc)})
                continue
            except Exception as exc:  # one figure never stops the shard
                log.exception("markers failed on %s", fig.figure_id)
                skips.append({"figure_id": fig.figure_id, "reason": "error", "detail": f"{type(exc).__name__}: {exc}"})
                continue
            markers.extend(m)
            patches.extend(p)
        paths = {"markers": out_dir / "markers.parquet", "patches": out_dir / "patches.parquet",
                 "skips": out_dir / "skips.parquet"}
        write_table(markers, MARKERS, paths["markers"])
        write_table(patches, PATCHES, paths["patches"])
        write_table(skips, SKIPS, paths["skips"])
        stats = {"figures": len(figs), "markers": len(markers),
                 "patches": sum(p["patch_index"] is not None for p in patches),
                 "patches_with_phrase": sum(p["patch_index"] is not None and p["paired"] for p in patches),
                 "phrases_without_patch": sum(p["patch_index"] is None for p in patches),
                 "skips": len(skips), "seconds": round(time.perf_counter() - t0, 3)}
        run.log_metrics(stats)
        run.log_outputs({**paths, "crops": out_dir / "crops"})
    log.info("markers %s: %s", shard, stats)
    return stats
