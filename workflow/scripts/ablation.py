"""Snakemake adapter: the arms' evaluations -> ablation.json, .md, .html and an MLflow run (panel2patch.evaluate.ablation)."""
import sys

sys.stderr = open(snakemake.log[0], "w", buffering=1)

import json
from pathlib import Path

from panel2patch.evaluate.ablation import compare, log_to_mlflow

p = snakemake.params
out_dir = Path(snakemake.output.json).parent
steps = {arm: [json.loads(Path(f).read_text())["step"] for f in files] for arm, files in p.train_results.items()}
result = compare(p.arms, p.baseline, out_dir, runs=p.runs, steps=steps, config=p.config, **p.options)
for warning in result["warnings"]:
    print(f"WARNING: {warning}", file=sys.stderr)
log_to_mlflow(result, out_dir, "all", p.tracking["results"], p.tracking)
print(f"ablation: {len(result['metrics'])} comparisons, {len(result['skipped'])} not compared", file=sys.stderr)
