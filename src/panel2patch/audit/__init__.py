"""Audit a workflow run: lineage, reproduction and the papers' claims (issue #14).

    from panel2patch.audit import audit
    result = audit("results", config=cfg, claims_dir="config/claims", reproduce_stages=["ingest"])
    result["rows"]    # [{"section", "check", "subject", "status", "detail"}], status pass | fail | not comparable
    result["failed"]  # the lineage and reproduction failures (the CLI's exit status 1)

- lineage (:mod:`.lineage`): every file the MLflow record names is re-hashed, and the chain model
  -> corpus shards -> articles -> input files, config and git commit followed through it;
- reproduction (:mod:`.reproduce`): data stages rerun in a scratch folder, outputs bit-identical;
- claims (:mod:`.claims`): ``config/claims/*.yaml`` against the run's evaluation and ablation;
  claim failures are reported, not counted as audit failures (a tiny run is not the paper's).

:func:`write` puts ``audit.json``, ``audit.md`` and ``audit.html`` in a folder and
:func:`log_to_mlflow` logs them as artifacts of an ``audit:<name>`` run of the record's run group.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

from .records import AuditError, open_record
from .report import failed, html_page, markdown, terminal

__all__ = ["AuditError", "audit", "load_config", "log_to_mlflow", "terminal", "write"]

os.environ.setdefault("MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR", "false")  # no bars per artifact read


def load_config(path: str | Path, schema: str | Path | None = None) -> dict:
    """A workflow config file with the schema's defaults filled in, as the workflow sees it."""
    import yaml
    from snakemake.utils import validate

    path = Path(path)
    if not path.is_file():
        raise AuditError(f"{path}: no such config file")
    config = yaml.safe_load(path.read_text()) or {}
    if schema and Path(schema).is_file():
        validate(config, str(schema))
    return config


def audit(path: str | Path, config: dict | None = None, config_name: str = "config", claims_dir: str | Path | None = None,
          reproduce_stages: list[str] | None = None, scratch: str | Path | None = None,
          tolerance: float | None = None) -> dict:
    from .claims import check_claims, load_claims
    from .lineage import check_lineage
    from .reproduce import TOLERANCE, reproduce

    rec = open_record(path)
    rows = check_lineage(rec, config, config_name)
    rows += reproduce(rec, list(reproduce_stages or []), scratch, tolerance=TOLERANCE if tolerance is None else tolerance)
    if claims_dir:
        runs = sorted(rec.stage("train"))
        rows += check_claims(load_claims(claims_dir), rec.results, runs)
    return {"results": str(rec.results), "parent_run": rec.parent.info.run_id, "run_group": rec.group,
            "tracking_uri": rec.uri, "rows": rows, "failed": failed(rows)}


def write(result: dict, out_dir: str | Path) -> dict[str, Path]:
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    paths = {"json": out_dir / "audit.json", "md": out_dir / "audit.md", "html": out_dir / "audit.html"}
    paths["json"].write_text(json.dumps(result, indent=1) + "\n")
    paths["md"].write_text(markdown(result))
    paths["html"].write_text(html_page(result))
    return paths


def log_to_mlflow(result: dict, paths: dict[str, Path], name: str = "all", params: dict | None = None,
                  tracking_cfg: dict | None = None) -> str:
    """An ``audit:<name>`` run (nested under the workflow's parent while it runs, else top-level
    in the record's run group) with the counts as metrics and the reports as artifacts."""
    import mlflow

    from panel2patch import tracking

    from .report import counts

    with tracking.stage_run("audit", name, params or {}, result["results"], tracking_cfg) as run:
        mlflow.set_tag(tracking.RUN_GROUP_TAG, result["run_group"])
        mlflow.set_tag("audit.parent_run", result["parent_run"])
        run.log_metrics({f"{section}.{status.replace(' ', '_')}": n for section, c in counts(result["rows"]).items()
                         for status, n in c.items()})
        run.log_metrics({"failed": len(result["failed"])})
        for p in paths.values():
            mlflow.log_artifact(str(p))
        return run.run_id
