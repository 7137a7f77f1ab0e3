"""Snakemake adapter: one trained run's model -> evaluation.json + .md and an MLflow run (panel2patch.evaluate.run)."""
import sys

sys.stderr = open(snakemake.log[0], "w", buffering=1)

import logging
from pathlib import Path

from panel2patch.evaluate.run import evaluate, log_to_mlflow

logging.basicConfig(level=logging.INFO, stream=sys.stderr, format="%(asctime)s %(name)s: %(message)s")
opts = dict(snakemake.params.options)
opts["threads"] = snakemake.threads
out_dir = Path(snakemake.output.json).parent
result = evaluate([snakemake.input.model], out_dir, Path(snakemake.input.sizes).parent, **opts)
log_to_mlflow(result, out_dir, snakemake.wildcards.run, snakemake.params.tracking["results"], snakemake.params.tracking)
if result["failed"]:
    raise SystemExit(f"evaluate: {len(result['failed'])} benchmark(s) failed: {result['failed']}")
