"""Candidate image-text pairs of one shard at three levels, with the filters that keep or drop them.

Inputs are the shard's stage tables: ingest ``figures.parquet`` (+ images), layout
``panels.parquet`` (+ crops), align ``panel_text.parquet``, markers ``patches.parquet`` (+ crops).
Every candidate becomes one row of :data:`PAIRS`, kept or not: a dropped pair carries the reason,
so a reviewer can count what each filter removed (``corpus/report``) and nothing is silently lost.

Ids (stable across reruns, ``[A-Za-z0-9._-]``)::

    figure  <figure_id>                      parent: null
    panel   <figure_id>__p<panel_index>      parent: the figure
    patch   <figure_id>__r<patch_index>      parent: its panel

Drop reasons, in the order they are checked (the first that applies is recorded):

- ``licence-unknown``: the article states no licence and the licence table has none for it
- ``licence-not-allowed``: the licence code is not in ``corpus.licences``
- ``unreadable-image``: the figure or crop file is missing or cannot be decoded
- ``too-small``: the image's shorter side is below ``corpus.min_side`` pixels
- ``kind-excluded``: the panel kind (a patch: its panel's) is not in ``corpus.panel_kinds``
- ``no-text``: no caption / subcaption / marker phrase to pair the image with
- ``short-text``: the text has fewer than ``corpus.min_text_chars`` characters
- ``parent-dropped``: the pair's figure (panel, for a patch) was dropped, so the levels always link
- ``duplicate-article`` (corpus-wide, :mod:`panel2patch.corpus.select`): another copy of the same
  article (same article id or DOI, another file, in this shard or another) was kept; one copy
  per article is chosen once over the whole corpus (:func:`~.select.drop_duplicate_copies`)
- ``near-duplicate`` (corpus-wide, :mod:`panel2patch.corpus.select`): pHash within
  ``corpus.dedupe_max_distance`` of an earlier pair of the same level from another figure (panels
  of one figure are often deliberately alike: before/after scans, matched plots)
"""

from __future__ import annotations

import csv
import logging
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow as pa
from PIL import Image

from ..ingest.images import ImageSkip, open_image, to_rgb
from ..ingest.licence import licence_code

log = logging.getLogger(__name__)

LEVELS = ("figure", "panel", "patch")

DEFAULTS = {
    "licences": ["cc0", "cc-by", "cc-by-sa", "public-domain"],
    "licence_table": None,
    "panel_kinds": ["image", "chart", "diagram", "other"],
    "min_side": 32,
    "min_text_chars": 10,
    "panel_text_from_refs": False,
    "dedupe_max_distance": 16,
    "split": {"val": 0.1, "test": 0.1, "seed": 0},
    "shard_max_pairs": 1000,
    "image_max_side": 1024,
    "max_image_pixels": 200_000_000,
    "report": {"figures": 12},
}

PAIRS = pa.schema([
    ("pair_id", pa.string()), ("level", pa.string()), ("figure_id", pa.string()), ("article_id", pa.string()),
    ("panel_id", pa.string()), ("parent_id", pa.string()), ("panel_index", pa.int32()), ("patch_index", pa.int32()),
    ("label", pa.string()), ("kind", pa.string()), ("bbox", pa.list_(pa.int32())),
    ("text", pa.string()), ("text_source", pa.string()), ("inline_refs", pa.list_(pa.string())),
    ("image_path", pa.string()), ("width", pa.int32()), ("height", pa.int32()), ("phash", pa.string()),
    ("licence", pa.string()), ("licence_code", pa.string()), ("licence_source", pa.string()),
    ("method", pa.string()), ("confidence", pa.float32()),
    ("keep", pa.bool_()), ("drop_reason", pa.string()), ("drop_detail", pa.string()), ("shard", pa.string()),
    ("doi", pa.string()), ("source_path", pa.string()),  # the figure's article: DOI and ingested file
])


# ------------------------------------------------------------------------------------- images
HASH_BITS = 256


def phash(img: Image.Image) -> str:
    """256-bit perceptual hash (DCT of a 64x64 grey thumbnail; the 16x16 lowest frequencies against
    their median) as 64 hex digits. A rescaled, recompressed copy differs in <= 8 bits; distinct
    images, even chest radiographs of different patients, in >= 70 (measured on the dev panels and
    200 VQA-RAD images). The common 64-bit pHash put distinct CT slices at distance 0."""
    import cv2

    grey = np.asarray(img.convert("L").resize((64, 64), Image.Resampling.BILINEAR), dtype=np.float32)
    low = cv2.dct(grey)[:16, :16].flatten()
    bits = low > np.median(low[1:])
    return f"{int(''.join('1' if b else '0' for b in bits), 2):064x}"


def image_info(path: Path, max_pixels: int) -> tuple[int, int, str]:
    """(width, height, phash) of an image file, or :class:`ImageSkip`."""
    if not path.is_file():
        raise ImageSkip("missing-image", f"{path}: no such file")
    img = to_rgb(open_image(path, max_pixels))
    return img.width, img.height, phash(img)


# ------------------------------------------------------------------------------------ licences
def read_licence_table(path: str | Path | None) -> dict[str, str]:
    """A CSV/TSV with columns ``id`` (article id, DOI, PMCID or PMID) and ``licence`` (URL or
    name, e.g. PMC's ``oa_file_list.csv`` reduced to these two columns) -> {id: licence}."""
    if not path:
        return {}
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"corpus.licence_table: {path} does not exist")
    text = path.read_text(encoding="utf-8")
    rows = csv.DictReader((line for line in text.splitlines() if line and not line.startswith("#")),
                          dialect="excel-tab" if "\t" in text.splitlines()[0] else "excel")
    if not rows.fieldnames or not {"id", "licence"} <= set(rows.fieldnames):
        raise ValueError(f"corpus.licence_table {path}: needs the columns 'id' and 'licence', got {rows.fieldnames}")
    return {r["id"].strip(): r["licence"].strip() for r in rows if r["id"] and r["licence"]}


def resolve_licence(fig, table: dict[str, str]) -> tuple[str | None, str | None, str | None]:
    """(licence, code, source) of a figure row: its own (``article``), else the licence table's."""
    if fig.licence_code:
        return fig.licence, fig.licence_code, "article"
    for key in (fig.article_id, fig.doi, fig.pmcid, fig.pmid):
        if key and key in table:
            return table[key], licence_code(table[key]), "table"
    return None, None, None


# -------------------------------------------------------------------------------------- pairs
def _text_drop(text: str | None, min_chars: int) -> str | None:
    if not text or not text.strip():
        return "no-text"
    return "short-text" if len(text.strip()) < min_chars else None


def _image(row: dict, path: Path, cfg: dict) -> None:
    """Fill width/height/phash of ``row`` from its image, or mark it unreadable / too small."""
    try:
        w, h, ph = image_info(path, cfg["max_image_pixels"])
    except ImageSkip as e:
        row.update(keep=False, drop_reason="unreadable-image", drop_detail=str(e))
        return
    row.update(width=w, height=h, phash=ph)
    if row["keep"] and min(w, h) < cfg["min_side"]:
        row.update(keep=False, drop_reason="too-small", drop_detail=f"{w}x{h} px < {cfg['min_side']}")


def _drop(row: dict, reason: str | None, detail: str | None = None) -> None:
    if row["keep"] and reason:
        row.update(keep=False, drop_reason=reason, drop_detail=detail)


def shard_pairs(figures: pd.DataFrame, images_dir: Path, panels: pd.DataFrame, layout_dir: Path,
                panel_text: pd.DataFrame, patches: pd.DataFrame, markers_dir: Path, cfg: dict,
                shard: str, licences: dict[str, str] | None = None) -> list[dict]:
    """All candidate pairs of one shard (see the module docstring), figures in table order, each
    followed by its panels and then their patches.

    The tables are frames as :func:`panel2patch.ingest.tables.read_table` gives them (missing
    values None; apply :func:`~panel2patch.ingest.tables.nulls` to a frame built otherwise). Every
    value of the rows comes from them, from the images or is a constant, so the rows hold None,
    never NaN, for a missing value."""
    cfg = {**DEFAULTS, **cfg}
    allowed, kinds = set(cfg["licences"]), set(cfg["panel_kinds"])
    texts = {(r.figure_id, int(r.panel_index)): r for r in panel_text.itertuples() if r.panel_index is not None}
    panels_by = dict(tuple(panels.groupby("figure_id"))) if len(panels) else {}
    patches = patches[patches.patch_index.notna()] if len(patches) else patches  # rows of unmatched phrases
    patches_by = dict(tuple(patches.groupby("figure_id"))) if len(patches) else {}
    rows: list[dict] = []
    for fig in figures.itertuples():
        lic, code, lic_src = resolve_licence(fig, licences or {})
        base = {"figure_id": fig.figure_id, "article_id": fig.article_id, "licence": lic, "licence_code": code,
                "licence_source": lic_src, "shard": shard, "keep": True, "drop_reason": None, "drop_detail": None,
                "inline_refs": [], "doi": fig.doi, "source_path": fig.source_path}
        frow = {**base, "pair_id": fig.figure_id, "level": "figure", "parent_id": None, "text": fig.caption,
                "text_source": "caption", "image_path": str(images_dir.parent / fig.image_path),
                "method": fig.method, "confidence": 1.0}
        frow["inline_refs"] = [r["sentence"] for r in (fig.inline_refs if fig.inline_refs is not None else [])]
        if code is None:
            _drop(frow, "licence-unknown", "no licence in the article or corpus.licence_table")
        elif code not in allowed:
            _drop(frow, "licence-not-allowed", f"{code} not in corpus.licences")
        _image(frow, Path(frow["image_path"]), cfg)
        _drop(frow, _text_drop(fig.caption, cfg["min_text_chars"]))
        rows.append(frow)
        fig_patches = patches_by.get(fig.figure_id)
        for p in panels_by.get(fig.figure_id, panels.iloc[0:0]).itertuples():
            pi = int(p.panel_index)
            pid = f"{fig.figure_id}__p{pi}"
            t = texts.get((fig.figure_id, pi))
            text, source = (t.text, "subcaption") if t is not None and t.text else (None, None)
            refs = list(t.inline_refs) if t is not None and t.inline_refs is not None else []
            if not text and refs and cfg["panel_text_from_refs"]:
                text, source = " ".join(refs), "inline_refs"
            prow = {**base, "pair_id": pid, "level": "panel", "panel_id": pid, "parent_id": fig.figure_id,
                    "panel_index": pi, "label": p.label, "kind": p.kind, "bbox": list(p.bbox), "text": text,
                    "text_source": source, "inline_refs": refs, "image_path": str(layout_dir / p.crop_path),
                    "method": f"{p.method}+{t.method if t is not None else 'none'}",
                    "confidence": float(p.score) * (float(t.confidence) if t is not None else 0.0)}
            _drop(prow, "parent-dropped" if not frow["keep"] else None, frow["drop_reason"])
            _image(prow, Path(prow["image_path"]), cfg)
            _drop(prow, "kind-excluded" if p.kind not in kinds else None, p.kind)
            _drop(prow, _text_drop(text, cfg["min_text_chars"]))
            rows.append(prow)
            if fig_patches is None:
                continue
            for r in fig_patches[fig_patches.panel_index == pi].itertuples():
                rrow = {**base, "pair_id": f"{fig.figure_id}__r{int(r.patch_index)}", "level": "patch", "panel_id": pid,
                        "parent_id": pid, "panel_index": pi, "patch_index": int(r.patch_index), "label": p.label,
                        "kind": p.kind, "bbox": list(r.bbox), "text": r.phrase if r.paired else None,
                        "text_source": "marker_phrase" if r.paired else None,
                        "image_path": str(markers_dir / r.crop_path), "method": "markers+" + ("phrase" if r.paired else "none"),
                        "confidence": float(r.score)}
                _drop(rrow, "parent-dropped" if not prow["keep"] else None, prow["drop_reason"])
                _image(rrow, Path(rrow["image_path"]), cfg)
                _drop(rrow, _text_drop(rrow["text"], cfg["min_text_chars"]), None if r.paired else r.reason)
                rows.append(rrow)
    return rows
