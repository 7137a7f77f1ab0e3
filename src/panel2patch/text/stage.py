"""The caption stage of the workflow: a shard's figures -> subcaptions and marker phrases.

``results/<shard>/text/subcaptions.parquet`` (one row per figure and key)
    figure_id    string
    key          string        ``_shared``, a panel letter ``A``..., a roman numeral ``i``... or a
                               position word (``left``, ``top`` ...), as ``split_caption`` returns
    text         string        the key's own text
    full_text    string        the key's text + ``_shared`` text (what a panel is paired with; own
                               words first, so that right truncation keeps them)
    inline_refs  list<string>  body sentences citing this panel letter ("Fig. 2B"); for
                               ``_shared``, the sentences citing the figure without a letter

``results/<shard>/text/markers.parquet`` (one row per marker phrase)
    figure_id, marker_index (int32), type, colour (null), count (int32, null),
    labels (list<string>: panel keys it belongs to, [] = whole figure), phrase
"""

from __future__ import annotations

import logging
import time
from pathlib import Path

import pyarrow as pa

from .. import tracking
from ..ingest.tables import read_table, write_table
from .markers import find_marker_phrases
from .split import MAX_CAPTION_CHARS, split_caption

log = logging.getLogger(__name__)

SUBCAPTIONS = pa.schema([("figure_id", pa.string()), ("key", pa.string()), ("text", pa.string()),
                         ("full_text", pa.string()), ("inline_refs", pa.list_(pa.string()))])
MARKERS = pa.schema([("figure_id", pa.string()), ("marker_index", pa.int32()), ("type", pa.string()),
                     ("colour", pa.string()), ("count", pa.int32()), ("labels", pa.list_(pa.string())),
                     ("phrase", pa.string())])


def caption_rows(figure_id: str, caption: str, inline_refs) -> tuple[list[dict], list[dict]]:
    """Subcaption and marker rows of one figure."""
    too_long = len(caption or "") > MAX_CAPTION_CHARS
    if too_long:
        log.warning("%s: caption of %d characters > %d: kept whole, not split", figure_id, len(caption),
                    MAX_CAPTION_CHARS)
    subs = {"_shared": caption} if too_long else split_caption(caption or "")
    shared = subs.get("_shared", "")
    refs = list(inline_refs) if inline_refs is not None else []
    sub_rows = []
    for key, text in subs.items():
        if key == "_shared":
            cites = [r["sentence"] for r in refs if len(r["panels"]) == 0]
            full = text
        else:
            cites = [r["sentence"] for r in refs if key.upper() in list(r["panels"])]
            full = f"{text} {shared}".strip()  # own words first: right truncation keeps them
        sub_rows.append({"figure_id": figure_id, "key": key, "text": text, "full_text": full, "inline_refs": cites})
    if too_long:
        return sub_rows, []
    marker_rows = [
        {"figure_id": figure_id, "marker_index": i, "type": m["type"], "colour": m.get("colour"), "count": m.get("count"),
         "labels": list(m.get("labels") or []), "phrase": m.get("phrase", "")}
        for i, m in enumerate(find_marker_phrases(caption or "", subs))
    ]
    return sub_rows, marker_rows


def run_text_shard(figures: str | Path, out_dir: str | Path, shard: str, results_dir: str | Path = "results",
                   tracking_cfg: dict | None = None) -> dict:
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    out_dir = Path(out_dir)
    with tracking.stage_run("text", shard, {"splitter": "rules-v1"}, results_dir, tracking_cfg) as run:
        t0 = time.perf_counter()
        figs = read_table(figures, columns=["figure_id", "caption", "inline_refs"])
        subs, marks = [], []
        for row in figs.itertuples(index=False):
            s, m = caption_rows(row.figure_id, row.caption, row.inline_refs)
            subs.extend(s)
            marks.extend(m)
        paths = {"subcaptions": out_dir / "subcaptions.parquet", "markers": out_dir / "markers.parquet"}
        write_table(subs, SUBCAPTIONS, paths["subcaptions"])
        write_table(marks, MARKERS, paths["markers"])
        n_split = sum(1 for f in {r["figure_id"] for r in subs if r["key"] != "_shared"})
        stats = {"figures": len(figs), "figures_split": n_split,
                 "captions_too_long": int((figs["caption"].fillna("").str.len() > MAX_CAPTION_CHARS).sum()),
                 "subcaptions": sum(r["key"] != "_shared" for r in subs),
                 "marker_phrases": len(marks), "seconds": round(time.perf_counter() - t0, 3)}
        run.log_metrics(stats)
        run.log_outputs(paths)
    log.info("text %s: %s", shard, stats)
    return stats
