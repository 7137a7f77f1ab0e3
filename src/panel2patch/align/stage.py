"""The alignment stage of the workflow: a shard's panels (layout) paired with subcaptions (text).

``results/<shard>/align/panel_text.parquet`` (one row per panel, then one per subcaption that no
panel took; see :func:`panel2patch.align.panels.align_panels`)
    figure_id     string
    panel_index   int32/null    ``layout/panels.parquet``'s index; null for an unmatched subcaption
    key           string/null   subcaption key (``A``, ``ii`` ...), null when unmatched or shared
    text          string/null   shared text + the panel's subcaption
    inline_refs   list<string>  body sentences citing this panel letter (from the text stage)
    method        string        ``letter`` | ``order`` | ``none``
    confidence    float32       0-1
    reason        string/null   why a pair is uncertain or missing

Patch-phrase pairs (``align_patches``) join this stage with the markers stage.
"""

from __future__ import annotations

import logging
import time
from collections import Counter
from pathlib import Path

import pandas as pd
import pyarrow as pa

from .. import tracking
from ..ingest.tables import read_table, write_table
from .panels import align_panels

log = logging.getLogger(__name__)

PANEL_TEXT = pa.schema([("figure_id", pa.string()), ("panel_index", pa.int32()), ("key", pa.string()),
                        ("text", pa.string()), ("inline_refs", pa.list_(pa.string())), ("method", pa.string()),
                        ("confidence", pa.float32()), ("reason", pa.string())])


def align_figure(figure_id: str, panels: pd.DataFrame, subs: pd.DataFrame) -> list[dict]:
    """Pairs of one figure: ``panels`` rows of panels.parquet, ``subs`` rows of subcaptions.parquet."""
    subcaptions = dict(zip(subs.key, subs.text))
    refs = dict(zip(subs.key, subs.inline_refs))
    plist = [{"index": int(r.panel_index), "label": r.label} for r in panels.itertuples()]
    rows = []
    for pair in align_panels(plist, subcaptions):
        key = pair["key"]
        rows.append({"figure_id": figure_id, "panel_index": pair["panel_index"], "key": key, "text": pair["text"],
                     "inline_refs": list(refs.get(key, [])) if key else [], "method": pair["method"],
                     "confidence": pair["confidence"], "reason": pair["reason"]})
    return rows


def run_align_shard(panels: str | Path, subcaptions: str | Path, out_path: str | Path, shard: str,
                    results_dir: str | Path = "results", tracking_cfg: dict | None = None) -> dict:
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    with tracking.stage_run("align", shard, {"panels": "letter-then-order"}, results_dir, tracking_cfg) as run:
        t0 = time.perf_counter()
        pan = read_table(panels, columns=["figure_id", "panel_index", "label"])
        sub = read_table(subcaptions)
        pan_by, sub_by = dict(tuple(pan.groupby("figure_id"))), dict(tuple(sub.groupby("figure_id")))
        empty_sub = sub.iloc[0:0]
        rows = []
        for fid in sorted(set(pan_by) | set(sub_by)):
            rows.extend(align_figure(fid, pan_by.get(fid, pan.iloc[0:0]), sub_by.get(fid, empty_sub)))
        write_table(rows, PANEL_TEXT, out_path)
        methods = Counter(r["method"] for r in rows if r["panel_index"] is not None)
        stats = {"panels": sum(r["panel_index"] is not None for r in rows),
                 "panels_with_text": sum(r["panel_index"] is not None and bool(r["text"]) for r in rows),
                 "unmatched_subcaptions": sum(r["panel_index"] is None for r in rows),
                 "method": dict(methods), "seconds": round(time.perf_counter() - t0, 3)}
        run.log_metrics(stats)
        run.log_outputs({"panel_text": out_path})
    log.info("align %s: %s", shard, stats)
    return stats
