"""``panel2patch audit``: check a workflow run's lineage, reproduce data stages, compare claims.

    panel2patch audit results                       # lineage + claims, reports in results/audit/
    panel2patch audit results --reproduce ingest    # also rerun ingest in a scratch folder
    panel2patch audit results --reproduce data      # rerun every data stage (ingest .. corpus)
    panel2patch audit results/train/tiny --out /tmp/audit --no-mlflow

RUN_OR_RESULTS_DIR: a results folder (with mlflow/parent_run.json) or a folder inside it. The
config compared with the recorded one is --config (default: config/config.yaml beside the results
folder, with the schema's defaults). Prints the pass / fail / not-comparable table; writes
audit.json, audit.md and audit.html to --out and logs them to MLflow.

Exit status: 0 lineage and reproduction pass (claims may be "not comparable" or fail: they are
reported, not enforced), 1 a lineage or reproduction check failed, 2 not a results folder, no
MLflow record of it, or a bad option.
"""

from __future__ import annotations

import argparse
from pathlib import Path


def _csv(value: str) -> list[str]:
    return [v.strip() for v in value.split(",") if v.strip()]


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("path", metavar="RUN_OR_RESULTS_DIR", help="results folder of a workflow run, or a folder inside it")
    p.add_argument("--config", help="workflow config to compare with the recorded one (default: config/config.yaml "
                                    "in the folder holding the results folder)")
    p.add_argument("--claims", help="folder of claims files (default: config/claims beside --config; 'none' to skip)")
    p.add_argument("--reproduce", type=_csv, default=[], metavar="STAGES",
                   help="comma-separated data stages to rerun with the workflow in a scratch folder and compare bit for "
                        "bit: ingest, ingest_summary, text, layout, markers, align, corpus_pairs, corpus, or data (all); "
                        "train: its final metrics within --tolerance")
    p.add_argument("--tolerance", type=float,
                   help="--reproduce train: largest absolute difference per final val/ and test/ metric "
                        "(default: panel2patch.audit.reproduce.TOLERANCE, 0.05)")
    p.add_argument("--scratch", help="empty or new scratch folder for --reproduce, kept after (default: a temporary "
                                     "folder, removed after)")
    p.add_argument("--out", help="folder for audit.json, audit.md, audit.html (default: <results>/audit)")
    p.add_argument("--no-mlflow", action="store_true", help="do not log the reports to MLflow")


def main(args: argparse.Namespace) -> int:
    from panel2patch.audit import AuditError, audit, load_config, log_to_mlflow, terminal, write
    from panel2patch.audit.records import find_results
    from panel2patch.audit.reproduce import stage_names
    from panel2patch.cli import EXIT_FAILED, EXIT_OK, UsageError, summary

    try:
        stage_names(args.reproduce)
    except ValueError as exc:
        raise UsageError(f"--reproduce: {exc}") from None
    try:
        results = find_results(args.path)
        root = results.parent
        config_path = Path(args.config) if args.config else root / "config" / "config.yaml"
        config = load_config(config_path, root / "workflow" / "schemas" / "config.schema.yaml")
        claims = None if args.claims == "none" else Path(args.claims) if args.claims else config_path.parent / "claims"
        if claims is not None and not claims.is_dir():
            raise AuditError(f"--claims {claims}: no such folder")
        result = audit(results, config, str(config_path), claims, args.reproduce, args.scratch, args.tolerance)
    except AuditError as exc:
        raise UsageError(str(exc)) from None
    paths = write(result, args.out or results / "audit")
    if not args.no_mlflow:
        log_to_mlflow(result, paths, params={"reproduce": args.reproduce, "config": str(config_path)})
    print(terminal(result))
    summary(f"audit: reports in {paths['md'].parent}")
    return EXIT_FAILED if result["failed"] else EXIT_OK
