"""Audit a corpus folder (``results/corpus``): read every shard back with the ``webdataset``
library and check what the trainer and a reviewer rely on.

    panel2patch corpus-check results/corpus

Checks: ``sizes.json`` and ``manifest.parquet`` agree with the tars (pairs, sha256); every sample
has an image that decodes, a non-empty text and a ``.txt`` member equal to it; ids are unique; every panel's parent is a figure
and every patch's parent a panel of the same figure, article and split, present in the corpus; a
figure's pairs are contiguous in one shard; each shard holds one split; no article is in two splits.
"""

from __future__ import annotations

import io
import json
from collections import Counter, defaultdict
from pathlib import Path

import pandas as pd
import webdataset as wds
from PIL import Image

from ..digest import sha256_path

PARENT_LEVEL = {"panel": "figure", "patch": "panel"}


def read_samples(shard: str | Path) -> list[dict]:
    """The samples of one shard: their JSON plus ``__key__``, the raw image bytes (``_image``) and
    the ``.txt`` member (``_txt``, None without one)."""
    out = []
    for s in wds.DataPipeline(wds.SimpleShardList([str(shard)]), wds.tarfile_to_samples()):
        out.append({**json.loads(s["json"]), "__key__": s["__key__"], "_image": s.get("jpg") or s.get("png"),
                    "_txt": s["txt"].decode("utf-8") if "txt" in s else None})
    return out


def check_corpus(corpus_dir: str | Path, decode_images: bool = True, progress=None) -> tuple[list[str], dict]:
    """(problems, stats) of a corpus folder; no problems means every check above passed.
    ``progress(iterable, total=, desc=, unit=)`` wraps the loop over shards (e.g. a tqdm bar)."""
    corpus_dir = Path(corpus_dir)
    problems: list[str] = []
    sizes = json.loads((corpus_dir / "shards" / "sizes.json").read_text())
    manifest = pd.read_parquet(corpus_dir / "manifest.parquet").set_index("shard")
    if set(manifest.index) != set(sizes):
        problems.append(f"manifest lists {sorted(manifest.index)}, sizes.json {sorted(sizes)}")
    samples: dict[str, dict] = {}
    article_splits: dict[str, set] = defaultdict(set)
    shard_sizes = sorted(sizes.items())
    if progress:
        shard_sizes = progress(shard_sizes, total=len(shard_sizes), desc="corpus check", unit="shard")
    for name, n in shard_sizes:
        path = corpus_dir / "shards" / name
        if name in manifest.index and sha256_path(path) != manifest.loc[name, "sha256"]:
            problems.append(f"{name}: sha256 differs from manifest.parquet")
        shard = read_samples(path)
        if len(shard) != n:
            problems.append(f"{name}: {len(shard)} samples, sizes.json says {n}")
        split = name.split("-")[0]
        seen_figures: list[str] = []
        for s in shard:
            sid = s.get("id")
            if sid in samples:
                problems.append(f"{name}: duplicate id {sid}")
            samples[sid] = s
            if s.get("split") != split:
                problems.append(f"{name}: {sid} has split {s.get('split')}")
            article_splits[s.get("article_id")].add(s.get("split"))
            if not (s.get("text") or "").strip():
                problems.append(f"{name}: {sid} has no text")
            if s["_txt"] != s.get("text"):  # open_clip_train reads the .txt member, drops a sample without
                problems.append(f"{name}: {sid} .txt member " + ("missing" if s["_txt"] is None else "differs from the JSON text"))
            if not s["_image"]:
                problems.append(f"{name}: {sid} has no image")
            elif decode_images:
                try:
                    Image.open(io.BytesIO(s["_image"])).verify()
                except Exception as e:  # noqa: BLE001 (any decoder error is a problem to report)
                    problems.append(f"{name}: {sid} image does not decode ({e})")
            fid = s.get("figure_id")
            if not seen_figures or seen_figures[-1] != fid:
                if fid in seen_figures:
                    problems.append(f"{name}: pairs of figure {fid} are not contiguous")
                seen_figures.append(fid)
    for sid, s in samples.items():
        level = s.get("level")
        if level == "figure":
            if s.get("parent_id") is not None or s.get("figure_id") != sid:
                problems.append(f"figure {sid}: parent_id/figure_id do not name itself")
            continue
        parent = samples.get(s.get("parent_id"))
        if parent is None:
            problems.append(f"{level} {sid}: parent {s.get('parent_id')} is not in the corpus")
        elif parent.get("level") != PARENT_LEVEL.get(level):
            problems.append(f"{level} {sid}: parent {parent.get('id')} is a {parent.get('level')}")
        elif any(parent.get(k) != s.get(k) for k in ("figure_id", "article_id", "split")):
            problems.append(f"{level} {sid}: figure, article or split differs from its parent's")
    for article, splits in article_splits.items():
        if len(splits) > 1:
            problems.append(f"article {article} is in splits {sorted(splits)}")
    stats = {"shards": len(sizes), "pairs": len(samples), "articles": len(article_splits),
             "levels": dict(Counter(s.get("level") for s in samples.values()))}
    return problems, stats
