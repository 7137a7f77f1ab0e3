"""Lineage tables of a built corpus (``results/corpus/``), for MLflow dataset inputs: which
article's pairs went into which WebDataset shard. Imports only pandas, so the train stage can log
them without the corpus-building code."""

from __future__ import annotations

from pathlib import Path

import pandas as pd

LEVELS = ("figure", "panel", "patch")  # as corpus.pairs.LEVELS


def corpus_articles(corpus_dir: str | Path, results_dir: str | Path | None = None) -> pd.DataFrame | None:
    """One row per article and WebDataset shard holding kept pairs of it: ``article_id``,
    ``source_path`` (the article's file, from the ingest tables under ``results_dir``, default the
    corpus folder's parent), ``tar``, ``split``, ``licence_code``, the pairs per level and the
    shard's ``tar_sha256``. None when ``corpus_dir`` holds no ``pairs.parquet`` (shards made elsewhere)."""
    corpus_dir = Path(corpus_dir)
    if not (corpus_dir / "pairs.parquet").is_file():
        return None
    results_dir = Path(results_dir) if results_dir is not None else corpus_dir.parent
    pairs = pd.read_parquet(corpus_dir / "pairs.parquet", columns=["article_id", "level", "licence_code", "keep", "shard", "split", "tar"])
    kept = pairs[pairs.keep.astype(bool) & pairs.tar.notna()]
    cols = ["article_id", "source_path", "tar", "split", "licence_code", "pairs", *[f"{lvl}_pairs" for lvl in LEVELS], "tar_sha256"]
    if kept.empty:
        return pd.DataFrame(columns=cols)
    counts = kept.pivot_table(index=["tar", "split", "article_id"], columns="level", values="keep", aggfunc="size",
                              fill_value=0).reindex(columns=list(LEVELS), fill_value=0)
    table = counts.rename(columns=lambda lvl: f"{lvl}_pairs").rename_axis(columns=None).reset_index()
    table.insert(3, "pairs", table[[f"{lvl}_pairs" for lvl in LEVELS]].sum(axis=1))
    first = kept.groupby("article_id").agg(licence_code=("licence_code", "first"), shard=("shard", "first"))
    sources = []
    for shard in sorted(set(first["shard"].dropna())):
        path = results_dir / shard / "ingest" / "articles.parquet"
        if path.is_file():
            sources.append(pd.read_parquet(path, columns=["article_id", "source_path"]))
    src = pd.concat(sources).drop_duplicates("article_id").set_index("article_id")["source_path"] if sources else pd.Series(dtype=str)
    table["source_path"] = table.article_id.map(src)
    table["licence_code"] = table.article_id.map(first["licence_code"])
    if (corpus_dir / "manifest.parquet").is_file():
        sha = pd.read_parquet(corpus_dir / "manifest.parquet", columns=["shard", "sha256"]).set_index("shard")["sha256"]
        table["tar_sha256"] = table.tar.map(sha)
    return table.reindex(columns=cols).sort_values(["article_id", "tar"]).reset_index(drop=True)
