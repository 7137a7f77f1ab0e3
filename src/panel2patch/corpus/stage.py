"""The corpus stage of the workflow: figure, panel and patch pairs -> WebDataset shards.

Two steps, so that the expensive image reading scales out by shard while the choices that need
the whole corpus (near-duplicates, the article split) are made once:

``results/<shard>/corpus/pairs.parquet`` (rule ``corpus_pairs``, one per shard)
    every candidate pair of the shard, kept or dropped with a reason (schema and reasons:
    :mod:`panel2patch.corpus.pairs`; ``split`` is null here)

``results/corpus/`` (rule ``corpus``, once)
    ``pairs.parquet``      all shards' pairs after corpus-wide removal of duplicate copies of an
                           article and of near-duplicates, with
                           ``split`` (train/val/test by article) and ``tar`` (the shard holding
                           the pair, null when dropped)
    ``shards/``            ``<split>-<6 digits>.tar`` WebDataset shards + ``sizes.json``
                           (format: :mod:`panel2patch.train.data`, writer: :mod:`.shards`)
    ``manifest.parquet``   one row per shard: shard, split, path, sha256, bytes, pairs,
                           figure_pairs, panel_pairs, patch_pairs, articles, figures
                           (logged to MLflow with ``mlflow.log_input``)
    ``yield.json``         supervision yield: pairs per source figure at each level, per split

MLflow: the corpus run logs the manifest (dataset ``corpus-shards``) and :func:`.lineage.corpus_articles`
(dataset ``corpus-articles``: which article's pairs are in which shard) as its outputs, each a
table artifact the dataset points to; the train run logs the same two tables as its inputs.
"""

from __future__ import annotations

import json
import logging
import sys
import time
from pathlib import Path

import mlflow
import pandas as pd
import pyarrow as pa

from .. import tracking
from ..ingest.tables import read_table, write_table
from .lineage import corpus_articles
from .pairs import DEFAULTS, LEVELS, PAIRS, read_licence_table, shard_pairs
from .select import drop_duplicate_copies, drop_near_duplicates, propagate_drops, split_articles
from .report import write_report
from .shards import write_shards

log = logging.getLogger(__name__)

CORPUS_PAIRS = PAIRS.append(pa.field("split", pa.string())).append(pa.field("tar", pa.string()))


def _cfg(cfg: dict | None) -> dict:
    cfg = {**DEFAULTS, **(cfg or {})}
    cfg["split"] = {**DEFAULTS["split"], **cfg["split"]}
    return cfg


def _logging() -> None:
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")


def drop_counts(pairs: pd.DataFrame) -> dict:
    dropped = pairs[~pairs.keep.astype(bool)]  # (an empty table's column is object-typed)
    return {f"dropped.{lvl}.{reason}": int(n) for (lvl, reason), n in dropped.groupby(["level", "drop_reason"]).size().items()}


def run_pairs_shard(figures: str | Path, panels: str | Path, panel_text: str | Path, patches: str | Path,
                    out_path: str | Path, shard: str, cfg: dict | None = None, results_dir: str | Path = "results",
                    tracking_cfg: dict | None = None) -> dict:
    """One shard's candidate pairs (rule ``corpus_pairs``); image folders are found beside the tables."""
    _logging()
    cfg = _cfg(cfg)
    with tracking.stage_run("corpus_pairs", shard, cfg, results_dir, tracking_cfg) as run:
        t0 = time.perf_counter()
        figures, panels, patches = Path(figures), Path(panels), Path(patches)
        rows = shard_pairs(read_table(figures), figures.parent / "images", read_table(panels), panels.parent,
                           read_table(panel_text), read_table(patches), patches.parent, cfg, shard,
                           read_licence_table(cfg["licence_table"]))
        write_table(rows, PAIRS, out_path)
        df = pd.DataFrame(rows, columns=PAIRS.names).astype({"keep": bool})
        stats = {"candidates": len(df), **{f"kept.{lvl}": int(((df.level == lvl) & df.keep).sum()) for lvl in LEVELS},
                 **drop_counts(df), "seconds": round(time.perf_counter() - t0, 3)}
        run.log_metrics(stats)
        run.log_outputs({"pairs": out_path})
    log.info("corpus_pairs %s: %s", shard, stats)
    return stats


def supervision_yield(pairs: pd.DataFrame) -> dict:
    """Pairs per source figure at each level: ``source_figures`` are the figures with a kept
    figure pair; ``candidates`` counts every ingested figure (kept or not)."""
    kept = pairs[pairs.keep]
    figures = int((kept.level == "figure").sum())
    out = {"ingested_figures": int((pairs.level == "figure").sum()), "source_figures": figures,
           "pairs": {lvl: int((kept.level == lvl).sum()) for lvl in LEVELS}}
    out["per_figure"] = {lvl: round(n / figures, 3) if figures else 0.0 for lvl, n in out["pairs"].items()}
    out["per_figure"]["all"] = round(len(kept) / figures, 3) if figures else 0.0
    out["by_split"] = {s: {lvl: int(((g.level == lvl)).sum()) for lvl in LEVELS} | {"articles": int(g.article_id.nunique())}
                       for s, g in kept.groupby("split")}
    return out


def format_yield(y: dict) -> str:
    per = y["per_figure"]
    lines = [f"Supervision yield: {y['source_figures']} source figures (of {y['ingested_figures']} ingested) -> "
             f"{sum(y['pairs'].values())} pairs, {per['all']:.2f} per figure"]
    lines += [f"  {lvl:<7} {y['pairs'][lvl]:>7} pairs  {per[lvl]:6.2f} per figure" for lvl in LEVELS]
    lines += [f"  split {s:<5} " + ", ".join(f"{k} {v}" for k, v in c.items()) for s, c in y["by_split"].items()]
    return "\n".join(lines)


def run_corpus(pair_tables: list[str | Path], out_dir: str | Path, cfg: dict | None = None,
               results_dir: str | Path = "results", tracking_cfg: dict | None = None, threads: int = 1) -> dict:
    """All shards' pairs -> near-duplicates dropped, split by article, shards, manifest, yield
    (``threads`` shards written at once; the output does not depend on it)."""
    _logging()
    cfg = _cfg(cfg)
    out_dir = Path(out_dir)
    with tracking.stage_run("corpus", "all", cfg, results_dir, tracking_cfg) as run:
        t0 = time.perf_counter()
        pairs = pd.concat([read_table(p) for p in pair_tables], ignore_index=True)
        if pairs.empty:
            pairs = pd.DataFrame(columns=PAIRS.names).astype({"keep": bool})
        pairs = propagate_drops(drop_near_duplicates(drop_duplicate_copies(pairs), cfg["dedupe_max_distance"]))
        sp = cfg["split"]
        splits = split_articles(pairs.article_id[pairs.keep], sp["val"], sp["test"], sp["seed"])
        pairs["split"] = pairs.article_id.map(splits)
        manifest, where = write_shards(pairs, out_dir / "shards", cfg["shard_max_pairs"], cfg["image_max_side"],
                                       sp["seed"], workers=threads)
        pairs["tar"] = pairs.pair_id.map(where).where(pairs.keep, None)  # a dropped copy may share a kept pair's id
        write_table(pairs, CORPUS_PAIRS, out_dir / "pairs.parquet")
        manifest.to_parquet(out_dir / "manifest.parquet", index=False)
        y = supervision_yield(pairs)
        (out_dir / "yield.json").write_text(json.dumps(y, indent=1) + "\n")
        run.log_manifest(manifest, "corpus-shards", context="output")  # sha256 per shard
        run.log_manifest(corpus_articles(out_dir, results_dir), "corpus-articles", context="output")
        stats = {"pairs": len(pairs), "kept": int(pairs.keep.sum()), "shards": len(manifest),
                 **{f"yield.{k}": v for k, v in y["per_figure"].items()},
                 **{f"pairs.{k}": v for k, v in y["pairs"].items()}, **drop_counts(pairs),
                 "seconds": round(time.perf_counter() - t0, 3)}
        run.log_metrics(stats)
        run.log_outputs({"pairs": out_dir / "pairs.parquet", "manifest": out_dir / "manifest.parquet",
                         "sizes": out_dir / "shards" / "sizes.json"})
        mlflow.log_artifact(str(out_dir / "yield.json"))
        mlflow.log_artifact(str(out_dir / "shards" / "sizes.json"))
    print(format_yield(y), file=sys.stderr)
    return y


def run_report(results_dir: str | Path, shards: list[str], out_dir: str | Path, n_figures: int = 12,
               tracking_cfg: dict | None = None) -> Path:
    """The HTML QC report (rule ``corpus_report``), also stored as MLflow artifacts under ``report/``."""
    _logging()
    with tracking.stage_run("corpus_report", "all", {"figures": n_figures}, results_dir, tracking_cfg) as run:
        t0 = time.perf_counter()
        path = write_report(results_dir, shards, out_dir, n_figures)
        run.log_metrics({"seconds": round(time.perf_counter() - t0, 3)})
        mlflow.log_artifacts(str(out_dir), "report")
    log.info("report: %s", path)
    return path
