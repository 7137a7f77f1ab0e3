"""Snakemake adapter: the arms' evaluations -> ablation.json, .md, .html and an MLflow run (panel2patch.evaluate.ablation)."""
import sys

sys.stderr = open(snakemake.log[0], "w", buffering=1)

from pathlib import Path

from panel2patch.evaluate.ablation import compare, log_to_mlflow

p = snakemake.params
out_dir = Path(snakemake.output.json).parent
result = compare(p.arms, p.baseline, out_dir, runs=p.runs, config=p.config, **p.options)
log_to_mlflow(result, out_dir, "all", p.tracking["results"], p.tracking)
print(f"ablation: {len(result['metrics'])} comparisons, {len(result['skipped'])} not compared", file=sys.stderr)
