"""``panel2patch ingest PATH... --out DIR``: the ingest stage on files by hand."""

from __future__ import annotations

import json
from pathlib import Path

from .core import DEFAULTS


def add_arguments(p) -> None:
    p.add_argument("paths", nargs="+", metavar="PATH", help="JATS file or folder, PMC .tar.gz package, PDF, or a folder of them")
    p.add_argument("--out", required=True, type=Path, help="output folder (figures/articles/skips.parquet + images/)")
    p.add_argument("--shard", default="manual", help="shard name written into the tables (default: manual)")
    p.add_argument("--pdf-dpi", type=int, default=DEFAULTS["pdf_dpi"])
    p.add_argument("--pdf-method", choices=["auto", "layout", "heuristic"], default=DEFAULTS["pdf_method"])
    p.add_argument("--max-image-pixels", type=int, default=DEFAULTS["max_image_pixels"])
    p.add_argument("--mlflow", action="store_true",
                   help="log the run to MLflow (MLFLOW_TRACKING_URI, else a SQLite store under --results)")
    p.add_argument("--results", type=Path, default=Path("results"), help="results root for the MLflow store (default: results)")


def main(args) -> int:
    from .discover import discover_units
    from .run import run_shard

    try:
        units = discover_units(args.paths)
    except FileNotFoundError as exc:
        print(f"panel2patch ingest: {exc}")
        return 2
    cfg = {"pdf_dpi": args.pdf_dpi, "pdf_method": args.pdf_method, "max_image_pixels": args.max_image_pixels}
    stats = run_shard(units, args.out, args.shard, cfg, results_dir=args.results, track=args.mlflow)
    print(json.dumps({k: v for k, v in stats.items()}, indent=2))
    return 0
