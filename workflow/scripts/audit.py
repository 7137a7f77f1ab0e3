"""Snakemake adapter: audit the run (panel2patch.audit) -> audit.json/.md/.html and an MLflow run."""
import sys

sys.stderr = open(snakemake.log[0], "w", buffering=1)

from pathlib import Path

from panel2patch.audit import audit, log_to_mlflow, terminal, write

p = snakemake.params
result = audit(p.tracking["results"], dict(p.config), "the workflow's config", p.claims, p.reproduce, tolerance=p.tolerance)
paths = write(result, Path(snakemake.output.json).parent)
log_to_mlflow(result, paths, params={"reproduce": p.reproduce, "claims": p.claims}, tracking_cfg=p.tracking)
print(terminal(result, width=120), file=sys.stderr)
if result["failed"] and p.fail:
    raise SystemExit(f"audit: {len(result['failed'])} lineage or reproduction check(s) failed (audit.fail: true); "
                     f"the table is in {snakemake.log[0]} and the audit's MLflow run")
