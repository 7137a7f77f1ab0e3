"""``panel2patch corpus``: build, audit or report a corpus from stage outputs by hand.

    panel2patch corpus build RESULTS [--config config/config.yaml] [--out RESULTS/corpus]
        every ``RESULTS/shard-*`` with ingest, layout, align and markers outputs -> pairs per shard,
        then shards, manifest and yield (same functions as the rules corpus_pairs and corpus)
    panel2patch corpus check CORPUS_DIR      read the shards back and audit them (exit 1 on problems)
    panel2patch corpus report RESULTS [--out DIR]   the HTML QC report (no MLflow run)

Exit status: 0 done (check: no problems), 1 check found problems, 2 a folder that is missing or
holds no shard outputs / no corpus.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import yaml


def add_arguments(p: argparse.ArgumentParser) -> None:
    sub = p.add_subparsers(dest="action", required=True, metavar="ACTION")
    b = sub.add_parser("build", help="pairs of every shard under RESULTS -> WebDataset shards",
                       description="every RESULTS/shard-*/ with ingest, layout, align and markers outputs -> pairs "
                                   "per shard, then WebDataset shards, manifest and yield under --out")
    b.add_argument("results", help="results folder holding shard-*/ stage outputs")
    b.add_argument("--config", default=None, help="workflow config whose corpus: section to use (default: built-in)")
    b.add_argument("--out", default=None, help="corpus folder (default: RESULTS/corpus)")
    b.add_argument("--threads", type=int, default=1, help="shards written at once (the output does not depend on it)")
    c = sub.add_parser("check", help="audit a corpus folder (ids, splits, sizes, sha256)",
                       description="read every shard back and audit it: sizes.json and manifest.parquet against the "
                                   "tars, decodable images, unique ids, parent links, one split per shard and article; "
                                   "stats as JSON on stdout, problems on stderr (exit 1 when there are any)")
    c.add_argument("corpus", help="corpus folder with shards/ and manifest.parquet")
    r = sub.add_parser("report", help="write the HTML QC report",
                       description="the HTML QC report of RESULTS (counts per stage and level, skip and drop reasons, "
                                   "histograms, drawn sample figures); its index.html path on stdout")
    r.add_argument("results", help="results folder holding shard-*/ stage outputs and corpus/")
    r.add_argument("--out", default=None, help="report folder (default: RESULTS/corpus/report)")
    r.add_argument("--figures", type=int, default=12, help="sample figures drawn in the report (default 12)")


def _shards(results: Path) -> list[str]:
    from ..cli import UsageError

    if not results.is_dir():
        raise UsageError(f"{results}: no such folder")
    shards = sorted(p.name for p in results.glob("shard-*") if (p / "markers" / "patches.parquet").exists())
    if not shards:
        raise UsageError(f"no shard-*/markers/patches.parquet under {results}")
    return shards


def main(args: argparse.Namespace) -> int:
    from ..cli import EXIT_FAILED, EXIT_OK, UsageError, progress, summary
    from .check import check_corpus
    from .report import write_report
    from .stage import run_corpus, run_pairs_shard

    if args.action == "check":
        corpus = Path(args.corpus)
        if not corpus.is_dir():
            raise UsageError(f"{corpus}: no such folder")
        if not (corpus / "shards" / "sizes.json").is_file() or not (corpus / "manifest.parquet").is_file():
            raise UsageError(f"{corpus}: not a corpus folder (no shards/sizes.json or manifest.parquet)")
        problems, stats = check_corpus(corpus, progress=progress)
        print(json.dumps(stats))
        for p in problems:
            print(f"problem: {p}", file=sys.stderr)
        summary(f"corpus check: {len(problems)} problems")
        return EXIT_FAILED if problems else EXIT_OK
    results = Path(args.results)
    if args.action == "report":
        print(write_report(results, _shards(results), args.out or results / "corpus" / "report", args.figures))
        return EXIT_OK
    cfg = (yaml.safe_load(Path(args.config).read_text()) or {}).get("corpus", {}) if args.config else {}
    tables = []
    shards = _shards(results)
    for shard in progress(shards, total=len(shards), desc="corpus pairs", unit="shard"):
        d = results / shard
        tables.append(d / "corpus" / "pairs.parquet")
        run_pairs_shard(d / "ingest" / "figures.parquet", d / "layout" / "panels.parquet",
                        d / "align" / "panel_text.parquet", d / "markers" / "patches.parquet", tables[-1], shard, cfg,
                        results_dir=results)
    run_corpus(tables, args.out or results / "corpus", cfg, results_dir=results, threads=args.threads)
    return EXIT_OK
