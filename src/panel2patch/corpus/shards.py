"""WebDataset shards of the kept pairs, in the format :mod:`panel2patch.train.data` documents.

One stream for all levels with a ``level`` field in each sample's JSON (so a figure, its panels
and their patches sit together in one shard, which the cross-level loss needs), the pair's text
also as a ``<key>.txt`` member (so ``python -m open_clip_train.main --dataset-type webdataset``
trains on the shards as they are: it reads ``jpg;png`` + ``txt``), shards named
``<split>-<6 digits>.tar``, ``sizes.json`` beside them. Shards are reproducible: figures are
ordered by a seeded shuffle, tar members carry fixed metadata (mtime 0, no user names), images
are the stage files' bytes unless they exceed ``image_max_side`` (then resized and re-encoded),
so the same inputs give the same sha256.
"""

from __future__ import annotations

import io
import json
import random
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pandas as pd
import webdataset as wds
from PIL import Image

from ..ingest.images import to_rgb
from ..digest import sha256_path
from .select import SPLITS

# JSON fields of every sample (the ids the trainer uses, then provenance)
SAMPLE_FIELDS = ("level", "text", "id", "figure_id", "article_id", "panel_id", "parent_id", "split", "licence",
                 "licence_code", "licence_source", "kind", "label", "bbox", "text_source", "inline_refs",
                 "method", "confidence", "panel_index", "patch_index", "shard")


def image_bytes(path: str | Path, max_side: int | None) -> tuple[bytes, str]:
    """(bytes, extension) of an image for a shard: the file itself when small enough and PNG/JPEG,
    else an RGB re-encode (JPEG q 90 for JPEG sources, PNG otherwise) with long side <= max_side."""
    path = Path(path)
    raw = path.read_bytes()
    with Image.open(io.BytesIO(raw)) as img:
        fmt, size = img.format, img.size
        if fmt in ("JPEG", "PNG") and (not max_side or max(size) <= max_side):
            return raw, "jpg" if fmt == "JPEG" else "png"
        img = to_rgb(img)
        if max_side and max(size) > max_side:
            scale = max_side / max(size)
            img = img.resize((max(1, round(size[0] * scale)), max(1, round(size[1] * scale))), Image.Resampling.LANCZOS)
        buf = io.BytesIO()
        if fmt == "JPEG":
            img.save(buf, "JPEG", quality=90)
            return buf.getvalue(), "jpg"
        img.save(buf, "PNG")
        return buf.getvalue(), "png"


def _key(pair_id: str, used: set[str]) -> str:
    """A tar ``__key__`` from a pair id: the id with every "." made "_" (WebDataset and
    open_clip_train split member names at the first dot), and "-2", "-3" ... appended should two
    ids of one shard meet that way.  The exact id is the JSON's ``id``."""
    key = pair_id.replace(".", "_")
    n = 1
    while key in used:
        key, n = f"{pair_id.replace('.', '_')}-{n}", n + 1
    used.add(key)
    return key


def _sample_json(row) -> bytes:
    meta = {}
    for f in SAMPLE_FIELDS:
        v = getattr(row, "pair_id" if f == "id" else f)
        meta[f] = v.tolist() if hasattr(v, "tolist") else v
    return json.dumps(meta, ensure_ascii=False, sort_keys=True).encode()


def figure_groups(kept: pd.DataFrame, seed: int) -> list[pd.DataFrame]:
    """Kept pairs grouped per figure (figure, its panels, their patches), figures shuffled."""
    order = {"figure": 0, "panel": 1, "patch": 2}
    kept = kept.assign(_lvl=kept.level.map(order)).sort_values(["figure_id", "_lvl", "panel_index", "patch_index"],
                                                                 na_position="first")
    groups = [g.drop(columns="_lvl") for _, g in kept.groupby("figure_id", sort=True)]
    random.Random(seed).shuffle(groups)
    return groups


def write_shards(pairs: pd.DataFrame, out_dir: str | Path, max_pairs: int = 1000, image_max_side: int | None = 1024,
                 seed: int = 0, workers: int = 1) -> tuple[pd.DataFrame, dict[str, str]]:
    """Write the kept pairs of ``pairs`` (with a ``split`` column; missing values None, as
    :func:`~panel2patch.ingest.tables.read_table` gives them) as shards + ``sizes.json``.

    A new shard starts when the current one holds ``max_pairs`` pairs, at a figure boundary (a
    figure's pairs are never split across shards). Old ``*.tar`` files in ``out_dir`` are removed
    first. ``workers`` shards are written at once (threads: reading and re-encoding images
    releases the GIL); each shard's bytes do not depend on it. Returns the manifest (one row per
    shard: shard, split, path, sha256, bytes, pairs, pairs per level, articles, figures) and
    {pair_id: shard name}."""
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    for old in out_dir.glob("*.tar"):
        old.unlink()
    kept = pairs[pairs.keep]
    jobs = []  # (split, shard name, its pairs), in shard order
    for split in SPLITS:
        groups = figure_groups(kept[kept.split == split], seed)
        chunks: list[list[pd.DataFrame]] = []
        for g in groups:
            if not chunks or sum(len(x) for x in chunks[-1]) >= max_pairs:
                chunks.append([])
            chunks[-1].append(g)
        jobs += [(split, f"{split}-{n:06d}.tar", pd.concat(chunk)) for n, chunk in enumerate(chunks)]

    def write(job) -> dict:
        split, name, part = job
        tmp = out_dir / (name + ".tmp")
        used: set[str] = set()
        with open(tmp, "wb") as fh, wds.TarWriter(fh, user="", group="", mtime=0, encoder=False) as sink:
            for row in part.itertuples():
                data, ext = image_bytes(row.image_path, image_max_side)
                sink.write({"__key__": _key(row.pair_id, used), ext: data, "txt": str(row.text).encode("utf-8"),
                            "json": _sample_json(row)})
        tmp.replace(out_dir / name)
        counts = part.level.value_counts()
        return {"shard": name, "split": split, "path": str(out_dir / name),
                "sha256": sha256_path(out_dir / name), "bytes": (out_dir / name).stat().st_size,
                "pairs": len(part), **{f"{lvl}_pairs": int(counts.get(lvl, 0)) for lvl in ("figure", "panel", "patch")},
                "articles": part.article_id.nunique(), "figures": part.figure_id.nunique()}

    if workers > 1 and len(jobs) > 1:
        with ThreadPoolExecutor(min(workers, len(jobs))) as pool:
            rows = list(pool.map(write, jobs))
    else:
        rows = [write(job) for job in jobs]
    sizes = {name: len(part) for _, name, part in jobs}
    where = {pid: name for _, name, part in jobs for pid in part.pair_id}
    tmp = out_dir / "sizes.json.tmp"
    tmp.write_text(json.dumps(sizes, indent=1, sort_keys=True) + "\n")
    tmp.replace(out_dir / "sizes.json")
    return pd.DataFrame(rows, columns=["shard", "split", "path", "sha256", "bytes", "pairs", "figure_pairs",
                                       "panel_pairs", "patch_pairs", "articles", "figures"]), where
