"""Tracked entry points of the ingest stage, shared by the Snakemake rules and the CLI."""

from __future__ import annotations

import json
import logging
import sys
from pathlib import Path

import pandas as pd

from .. import tracking
from .core import DEFAULTS, ingest_units
from .discover import Unit
from ..digest import sha256_file

log = logging.getLogger(__name__)


def unit_manifest(units: list[Unit]) -> pd.DataFrame:
    """Inputs of a job with size and sha256, for ``mlflow.log_input``."""
    rows = []
    for u in units:
        p = Path(u.path)
        # a link is never followed, not even to hash it; a bulk archive (GBs) is named by its
        # member, not hashed once per shard
        ok = u.kind in ("jats", "package", "pdf", "unsupported") and p.is_file()
        rows.append({"path": f"{u.path}!{u.member}" if u.member else u.path, "kind": u.kind,
                     "bytes": p.stat().st_size if ok else None, "sha256": sha256_file(p) if ok else None})
    return pd.DataFrame(rows, columns=["path", "kind", "bytes", "sha256"])


def unit_articles(units: pd.DataFrame, articles: pd.DataFrame) -> pd.DataFrame:
    """The shard's dataset table: one row per article read from each input unit (``article_id``,
    its ``source_path``, e.g. ``pkg.tar.gz!member.xml``), with the unit's ``path``, ``kind``,
    ``bytes`` and ``sha256``; a unit that gave no article keeps one row with a null article_id."""
    rows = []
    for u in units.itertuples(index=False):
        src = articles.source_path.astype(str) if len(articles) else pd.Series([], dtype=str)
        mine = articles[(src == u.path) | src.str.startswith(u.path + "/") | src.str.startswith(u.path + "!")] \
            if len(articles) else articles
        base = {"path": u.path, "kind": u.kind, "bytes": u.bytes, "sha256": u.sha256}
        rows += [{**base, "article_id": a.article_id, "source_path": a.source_path} for a in mine.itertuples(index=False)] \
            or [{**base, "article_id": None, "source_path": None}]
    return pd.DataFrame(rows, columns=["article_id", "source_path", "path", "kind", "bytes", "sha256"])


def run_shard(units: list[dict | Unit], out_dir: str | Path, shard: str, cfg: dict | None,
              results_dir: str | Path = "results", tracking_cfg: dict | None = None, track: bool = True,
              progress: bool = True) -> dict:
    """Ingest one shard into ``out_dir`` and log params, input manifest, counts and output hashes
    (``progress``: a tqdm bar over the articles on stderr)."""
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    units = [u if isinstance(u, Unit) else Unit(**u) for u in units]
    cfg = {**DEFAULTS, **(cfg or {})}
    if not track:
        return ingest_units(units, out_dir, shard, cfg, progress=progress)
    with tracking.stage_run("ingest", shard, cfg, results_dir, tracking_cfg) as run:
        manifest = unit_manifest(units)
        stats = ingest_units(units, out_dir, shard, cfg, progress=progress)
        articles = pd.read_parquet(stats["outputs"]["articles"], columns=["article_id", "source_path"])
        run.log_manifest(unit_articles(manifest, articles), name=f"ingest-{shard}")
        run.log_metrics({k: v for k, v in stats.items() if k != "outputs"})
        outputs = {**stats["outputs"], "images": str(Path(out_dir) / "images")}
        run.log_outputs(outputs)
    log.info("ingest %s: %s", shard, json.dumps({k: v for k, v in stats.items() if k != "outputs"}))
    return stats


def summarise(figures: list[str], articles: list[str], skips: list[str], summary_path: str | Path,
              skips_path: str | Path, results_dir: str | Path = "results", tracking_cfg: dict | None = None) -> dict:
    """Totals over all shards: ``summary.json`` and one ``skips.tsv`` listing every skip."""
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    read = lambda paths: pd.concat([pd.read_parquet(p) for p in paths], ignore_index=True) if paths else pd.DataFrame()
    fig, art, skp = read(figures), read(articles), read(skips)
    summary = {
        "shards": len(figures),
        "articles": int(len(art)),
        "figures": int(len(fig)),
        "figures_by_source": fig["source_kind"].value_counts().to_dict() if len(fig) else {},
        "figures_with_inline_refs": int(fig["inline_refs"].map(len).gt(0).sum()) if len(fig) else 0,
        "figures_with_licence": int(fig["licence"].notna().sum()) if len(fig) else 0,
        "skips": int(len(skp)),
        "skip_reasons": skp["reason"].value_counts().sort_index().to_dict() if len(skp) else {},
    }
    Path(summary_path).parent.mkdir(parents=True, exist_ok=True)
    Path(summary_path).write_text(json.dumps(summary, indent=2) + "\n")
    cols = ["shard", "source_path", "article_id", "figure_key", "reason", "detail"]
    (skp if len(skp) else pd.DataFrame(columns=cols)).to_csv(skips_path, sep="\t", index=False)
    with tracking.stage_run("ingest_summary", "all", {"shards": len(figures)}, results_dir, tracking_cfg) as run:
        run.log_metrics(summary)
        run.log_outputs({"summary": summary_path, "skips": skips_path})
    print(f"ingest: {summary['figures']} figures from {summary['articles']} articles, {summary['skips']} skipped "
          f"{summary['skip_reasons']}", file=sys.stderr)
    return summary
