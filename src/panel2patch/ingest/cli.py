"""``panel2patch ingest PATH... --out DIR``: the ingest stage on files by hand.

Writes ``figures.parquet``, ``articles.parquet``, ``skips.parquet`` and ``images/`` under
``--out`` (the workflow's tables, see docs/schema.md) and prints the counts as JSON on stdout.
Exit status: 0 when every article was read, 1 when one or more articles or figures failed
(a skip whose reason is in ``FAILED_REASONS``: unreadable XML, image, package or PDF, or an
unexpected error; the rest is written), 2 when a PATH does not exist. An article without
figures, a figure without caption or a symbolic link is a skip but no failure.
"""

from __future__ import annotations

import json
from pathlib import Path

from .core import DEFAULTS

# skip reasons (ingest.tables.SKIP_REASONS) that mean an input could not be read
FAILED_REASONS = frozenset({"malformed-xml", "not-jats", "missing-image", "unreadable-image", "decompression-bomb",
                            "bad-package", "unreadable-pdf", "pdf-render-failed", "unsupported-input", "error"})


def add_arguments(p) -> None:
    p.add_argument("paths", nargs="+", metavar="PATH", help="JATS file or folder, PMC .tar.gz package, PDF, or a folder of them")
    p.add_argument("--out", required=True, type=Path, help="output folder (figures/articles/skips.parquet + images/)")
    p.add_argument("--shard", default="manual", help="shard name written into the tables (default: manual)")
    p.add_argument("--pdf-dpi", type=int, default=DEFAULTS["pdf_dpi"],
                   help=f"render PDF figures at this resolution (default {DEFAULTS['pdf_dpi']})")
    p.add_argument("--pdf-method", choices=["auto", "layout", "heuristic"], default=DEFAULTS["pdf_method"],
                   help="how PDF figures and captions are found: pymupdf.layout models, heuristics, or auto "
                        f"(default {DEFAULTS['pdf_method']})")
    p.add_argument("--max-image-pixels", type=int, default=DEFAULTS["max_image_pixels"],
                   help="images with more pixels are skipped as decompression bombs "
                        f"(default {DEFAULTS['max_image_pixels']})")
    p.add_argument("--mlflow", action="store_true",
                   help="log the run to MLflow (MLFLOW_TRACKING_URI, else a SQLite store under --results)")
    p.add_argument("--results", type=Path, default=Path("results"), help="results root for the MLflow store (default: results)")


def main(args) -> int:
    from ..cli import EXIT_FAILED, EXIT_OK, UsageError, show_progress
    from .discover import discover_units
    from .run import run_shard

    try:
        units = discover_units(args.paths)
    except FileNotFoundError as exc:
        raise UsageError(str(exc)) from None
    cfg = {"pdf_dpi": args.pdf_dpi, "pdf_method": args.pdf_method, "max_image_pixels": args.max_image_pixels}
    stats = run_shard(units, args.out, args.shard, cfg, results_dir=args.results, track=args.mlflow,
                      progress=show_progress())
    print(json.dumps({k: v for k, v in stats.items()}, indent=2))
    return EXIT_FAILED if FAILED_REASONS & set(stats.get("skip_reasons", {})) else EXIT_OK
