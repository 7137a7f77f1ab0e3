"""What MLflow recorded about a results folder: its parent run, the stage runs of its run group,
their ``outputs.json`` and their dataset tables (see :mod:`panel2patch.tracking`)."""

from __future__ import annotations

import json
import tempfile
from dataclasses import dataclass, field
from pathlib import Path

import pandas as pd
from mlflow.exceptions import MlflowException
from mlflow.tracking import MlflowClient

from panel2patch import tracking


class AuditError(Exception):
    """The folder cannot be audited (not a results folder, no MLflow record of it)."""


def find_results(path: str | Path) -> Path:
    """The results folder holding ``path``: the first of ``path`` and its parents with
    ``mlflow/parent_run.json`` (a run folder such as ``results/train/tiny`` gives ``results``)."""
    path = Path(path)
    if not path.exists():
        raise AuditError(f"{path}: no such folder")
    if not path.is_dir():
        raise AuditError(f"{path}: not a folder")
    for folder in [path.resolve(), *path.resolve().parents]:
        if (folder / tracking.PARENT_FILE).is_file():
            return folder
    raise AuditError(f"{path}: not a results folder (no {tracking.PARENT_FILE} in it or above it; "
                     "run the workflow first)")


@dataclass
class Record:
    results: Path  # the results folder
    root: Path  # the folder the workflow ran in: recorded relative paths start here
    client: MlflowClient
    uri: str
    parent: object  # mlflow Run: the folder's last parent run (its invocation's config)
    runs: list = field(default_factory=list)  # FINISHED stage runs of the run group, oldest first
    _cache: dict = field(default_factory=dict)

    @property
    def group(self) -> str:
        return self.parent.data.tags.get(tracking.RUN_GROUP_TAG, "")

    def latest(self, run_name: str):
        """The latest finished stage run called ``run_name`` (e.g. ``corpus:all``), or None."""
        named = [r for r in self.runs if r.info.run_name == run_name]
        return named[-1] if named else None

    def stage(self, stage: str) -> dict[str, object]:
        """The latest finished run per run name of ``stage`` (``ingest`` -> {shard name: run})."""
        return {r.info.run_name.split(":", 1)[1]: r for r in self.runs
                if r.data.tags.get("panel2patch.stage") == stage}

    def artifact_json(self, run_id: str, path: str):
        """A JSON artifact of a run (None when the run has none)."""
        key = (run_id, path)
        if key not in self._cache:
            try:
                with tempfile.TemporaryDirectory() as tmp:
                    local = self.client.download_artifacts(run_id, path, tmp)
                    self._cache[key] = json.loads(Path(local).read_text())
            except (MlflowException, OSError):
                self._cache[key] = None
        return self._cache[key]

    def table(self, run, name: str) -> pd.DataFrame | None:
        """The rows of the run's dataset input ``name`` (the last logged), or None (none logged, or
        its table artifact cannot be read)."""
        inputs = [d for d in run.inputs.dataset_inputs if d.dataset.name == name] if run.inputs else []
        if not inputs:
            return None
        uri = json.loads(inputs[-1].dataset.source).get("uri", "")
        run_id, _, path = uri.removeprefix("runs:/").partition("/")
        key = (run_id, path)
        if key not in self._cache:
            try:
                with tempfile.TemporaryDirectory() as tmp:
                    local = self.client.download_artifacts(run_id, path, tmp)
                    self._cache[key] = pd.read_csv(local) if local.endswith(".csv") else pd.read_parquet(local)
            except (MlflowException, OSError):  # the table's artifact is gone: the check reports it missing
                self._cache[key] = None
        return self._cache[key]

    def config(self) -> dict | None:
        """The config the parent run recorded (its ``config.json``)."""
        return self.artifact_json(self.parent.info.run_id, "config.json")

    def path(self, recorded: str) -> Path:
        """A recorded path on disk (relative ones from the workflow's folder)."""
        p = Path(recorded)
        return p if p.is_absolute() else self.root / p


def _is_store(db: Path) -> bool:
    import sqlite3

    con = sqlite3.connect(f"file:{db}?mode=ro", uri=True)
    try:
        return con.execute("SELECT 1 FROM sqlite_master WHERE type = 'table' AND name = 'runs'").fetchone() is not None
    except sqlite3.DatabaseError:
        return False
    finally:
        con.close()


def open_record(path: str | Path) -> Record:
    """The MLflow record of the results folder holding ``path``. The embedded store is re-pointed at
    the folder it lies in first (:func:`panel2patch.tracking.relocate_store`), so a moved or copied
    results folder is audited against its own artifacts."""
    results = find_results(path)
    info = json.loads((results / tracking.PARENT_FILE).read_text())
    embedded = results / "mlflow" / "mlflow.db"
    if embedded.is_file():
        if not _is_store(embedded):  # never let MLflow create a store where the record should be
            raise AuditError(f"{results}: {embedded} is not an MLflow store (no runs table)")
        tracking.relocate_store(results)
        uri = f"sqlite:///{embedded}"
    else:
        uri = info.get("tracking_uri") or ""
    if not uri:
        raise AuditError(f"{results}: no MLflow store ({embedded} is missing and {tracking.PARENT_FILE} names none)")
    client = MlflowClient(uri)
    try:
        parent = client.get_run(info["run_id"])
    except (MlflowException, KeyError) as exc:
        raise AuditError(f"{results}: no MLflow record of its parent run {info.get('run_id')} in {uri} "
                         f"({str(exc).splitlines()[0][:200]})") from None
    group = parent.data.tags.get(tracking.RUN_GROUP_TAG) or info.get("run_group")
    if group:
        found = tracking._search_all(client, parent.info.experiment_id, f"tags.`{tracking.RUN_GROUP_TAG}` = '{group}'")
    else:  # a store from before run groups: the parent's own children
        found = tracking._search_all(client, parent.info.experiment_id, f"tags.`mlflow.parentRunId` = '{parent.info.run_id}'")
    runs = sorted((r for r in found if r.data.tags.get("panel2patch.level") == "stage" and r.info.status == "FINISHED"
                   and r.data.tags.get("panel2patch.stage") != "audit"), key=lambda r: r.info.start_time)
    return Record(results=results, root=results.parent, client=client, uri=uri, parent=parent, runs=runs)
