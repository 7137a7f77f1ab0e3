"""MLflow lineage helpers against a real SQLite-backed MLflow store."""

from __future__ import annotations

import json
import os

import mlflow
import pandas as pd
import pytest

from panel2patch import tracking


@pytest.fixture()
def results(tmp_path, monkeypatch):
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    monkeypatch.delenv(tracking.PARENT_ENV, raising=False)  # start_workflow_run sets it
    return tmp_path / "results"


def runs(results):
    mlflow.set_tracking_uri(f"sqlite:///{results.resolve()}/mlflow/mlflow.db")
    return {r.info.run_name: r for r in mlflow.search_runs(experiment_names=["panel2patch"], output_format="list")}


def test_parent_and_nested_runs(results):
    config = {"inputs": ["x"], "shard_size": 2, "ingest": {"pdf_dpi": 150}, "tracking": {"uri": None}}
    parent_id = tracking.start_workflow_run(results, config, pd.DataFrame({"path": ["a.nxml"], "kind": ["jats"], "shard": ["shard-00000"]}))
    assert json.loads((results / tracking.PARENT_FILE).read_text())["run_id"] == parent_id
    assert json.loads(os.environ[tracking.PARENT_ENV])["run_id"] == parent_id
    out = results / "out.txt"
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text("hello")
    with tracking.stage_run("ingest", "shard-00000", {"pdf_dpi": 150}, results) as run:
        run.log_metrics({"figures": 3, "skip_reasons": {"missing-image": 2}, "note": "not a number"})
        record = run.log_outputs({"out": out, "absent": results / "nope"})
    assert record["out"]["sha256"] == "2cf24dba5fb0a30e26e83b2ac5b9e29e1b161e5c1fa7425e73043362938b9824"
    assert "absent" not in record
    tracking.end_workflow_run(results, "FINISHED")
    r = runs(results)
    parent = next(v for k, v in r.items() if k.startswith("workflow"))
    child = r["ingest:shard-00000"]
    assert parent.info.status == "FINISHED" and parent.data.params["ingest.pdf_dpi"] == "150"
    assert child.data.tags["mlflow.parentRunId"] == parent_id
    assert child.data.metrics == {"figures": 3.0, "skip_reasons.missing-image": 2.0}
    assert child.data.tags["output.out.sha256"] == record["out"]["sha256"]
    # artifacts land in the embedded store under results/
    assert any((results / "mlflow" / "artifacts").rglob("outputs.json"))


def test_job_after_a_finished_invocation_is_top_level(results):
    tracking.start_workflow_run(results, {"inputs": ["x"]})
    tracking.end_workflow_run(results, "FAILED")
    with tracking.stage_run("ingest", "manual", {}, results):
        pass
    r = runs(results)
    assert "mlflow.parentRunId" not in r["ingest:manual"].data.tags
    assert next(v for k, v in r.items() if k.startswith("workflow")).info.status == "FAILED"


def test_tracking_uri_precedence(results, monkeypatch):
    assert tracking.tracking_uri(results).startswith("sqlite:///") and str(results.resolve()) in tracking.tracking_uri(results)
    assert tracking.tracking_uri(results, "http://mlflow.example:5000") == "http://mlflow.example:5000"
    monkeypatch.setenv("MLFLOW_TRACKING_URI", "sqlite:////tmp/elsewhere.db")
    assert tracking.tracking_uri(results, "http://mlflow.example:5000") == "sqlite:////tmp/elsewhere.db"


def test_a_store_used_earlier_in_the_process_does_not_capture_later_runs(tmp_path):
    first, second = tmp_path / "r1", tmp_path / "r2"
    with tracking.stage_run("ingest", "one", {}, first):
        pass
    with tracking.stage_run("ingest", "two", {}, second):
        pass
    assert set(runs(first)) == {"ingest:one"} and set(runs(second)) == {"ingest:two"}


def test_folder_hash_ignores_snakemake_timestamp(tmp_path):
    """Snakemake writes .snakemake_timestamp into directory() outputs after the job has logged the
    folder's sha256; the logged hash must still reproduce."""
    d = tmp_path / "crops"
    (d / "sub").mkdir(parents=True)
    (d / "a.png").write_bytes(b"a")
    (d / "sub" / "b.png").write_bytes(b"b")
    logged = tracking.sha256_path(d)
    (d / ".snakemake_timestamp").write_text("")
    assert tracking.sha256_path(d) == logged
    (d / "c.png").write_bytes(b"c")
    assert tracking.sha256_path(d) != logged


def test_a_dataset_insert_that_loses_a_race_is_tried_again(results, monkeypatch):
    """Two jobs logging the same table at once: the loser's insert of (experiment, name, digest)
    fails on the store's unique key; tried again, it links the winner's dataset to its run."""
    from mlflow.exceptions import MlflowException
    from mlflow.tracking import MlflowClient

    table = pd.DataFrame({"name": ["corpus-test"], "sha256": ["ab" * 32]})
    real, calls = MlflowClient.log_inputs, []

    def racing(self, run_id, datasets=None, models=None):
        calls.append(run_id)
        if len(calls) == 1:  # the other job inserts the same dataset first, then ours fails
            other = self.create_run(mlflow.active_run().info.experiment_id, run_name="other")
            real(self, other.info.run_id, datasets)
            self.set_terminated(other.info.run_id)
            raise MlflowException("(sqlite3.IntegrityError) UNIQUE constraint failed: datasets.experiment_id, "
                                  "datasets.name, datasets.digest")
        return real(self, run_id, datasets)

    monkeypatch.setattr(MlflowClient, "log_inputs", racing)
    with tracking.stage_run("evaluate", "mine", {}, results) as run:
        run.log_manifest(table, name="evaluation-data", context="evaluation")
    assert len(calls) == 2
    mine, other = runs(results)["evaluate:mine"], runs(results)["other"]
    assert [d.dataset.name for d in mine.inputs.dataset_inputs] == ["evaluation-data"]
    assert mine.inputs.dataset_inputs[0].dataset.digest == other.inputs.dataset_inputs[0].dataset.digest

    def broken(self, run_id, datasets=None, models=None):
        raise MlflowException("some other store error")

    monkeypatch.setattr(MlflowClient, "log_inputs", broken)
    with pytest.raises(MlflowException, match="some other store error"):
        with tracking.stage_run("evaluate", "third", {}, results) as run:
            run.log_manifest(table, name="evaluation-data", context="evaluation")


JOB = """
import mlflow, sys
from panel2patch import tracking
with tracking.stage_run("ingest", "job", {"x": 1}, sys.argv[1]) as run:
    run.log_metrics({"figures": 5})
    mlflow.log_dict({"ok": True}, "job.json")
print(mlflow.get_tracking_uri())
"""


def test_server_auto_jobs_log_over_http_and_the_server_stops(results, tmp_path):
    """tracking.server auto: the workflow run starts its own `mlflow server` (pid file, log), a job
    (another process, inheriting the environment as Snakemake's jobs do) logs over HTTP into the
    embedded store, and end_workflow_run stops the server's whole process group."""
    import subprocess
    import sys

    parent_id = tracking.start_workflow_run(results, {"inputs": ["x"], "tracking": {"server": "auto"}})
    info = json.loads((results / tracking.SERVER_FILE).read_text())
    assert info["uri"].startswith("http://") and json.loads(os.environ[tracking.PARENT_ENV])["tracking_uri"] == info["uri"]
    env = {**os.environ, "PYTHONPATH": str(tracking.Path(tracking.__file__).parents[1])}
    job = subprocess.run([sys.executable, "-c", JOB, str(results)], env=env, capture_output=True, text=True, timeout=300)
    assert job.returncode == 0, job.stderr
    assert job.stdout.strip().splitlines()[-1] == info["uri"]
    assert tracking._server_group(info["pid"])
    tracking.end_workflow_run(results, "FINISHED")
    assert not (results / tracking.SERVER_FILE).exists() and tracking._server_group(info["pid"]) == []
    assert "POST /api/2.0/mlflow/runs/log-batch" in (results / tracking.SERVER_LOG).read_text()
    r = runs(results)  # the same store as without a server: results/mlflow/mlflow.db
    assert r["ingest:job"].data.tags["mlflow.parentRunId"] == parent_id and r["ingest:job"].data.metrics == {"figures": 5.0}
    assert r["ingest:job"].info.status == "FINISHED" and r[next(k for k in r if k.startswith("workflow"))].info.status == "FINISHED"
    assert list((results / "mlflow" / "artifacts").rglob("job.json"))
    # a job run by hand afterwards does not wait for the stopped server: a top-level run in the store
    with tracking.stage_run("ingest", "manual", {}, results):
        pass
    assert "mlflow.parentRunId" not in runs(results)["ingest:manual"].data.tags


def test_server_left_by_a_crashed_run_is_stopped_at_the_next_start(results):
    """A server whose workflow process died (kill -9: no onsuccess/onerror, no atexit) is found by
    its pid file; its workers are stopped even when its first process was killed too."""
    import signal

    tracking.start_server(results, {})
    old = json.loads((results / tracking.SERVER_FILE).read_text())
    os.kill(old["pid"], signal.SIGKILL)  # the group's leader gone, its uvicorn worker orphaned
    os.waitpid(old["pid"], 0)
    assert any("uvicorn" in cmd for cmd in tracking._server_group(old["pid"]))
    try:
        uri = tracking.start_server(results, {})
        assert tracking._server_group(old["pid"]) == [] and uri.startswith("http://")
    finally:
        new = json.loads((results / tracking.SERVER_FILE).read_text())
        assert tracking.stop_server(results)
    assert tracking._server_group(new["pid"]) == []


def test_server_auto_with_a_configured_backend_store(results, tmp_path):
    """tracking.backend_store_uri: the server writes that store (here another SQLite file; a
    PostgreSQL URI in production), not the embedded one; results/mlflow/ still gets the run files."""
    other = tmp_path / "site" / "mlflow.db"
    other.parent.mkdir()
    parent_id = tracking.start_workflow_run(results, {"inputs": ["x"], "tracking": {
        "server": "auto", "backend_store_uri": f"sqlite:///{other}"}})
    tracking.end_workflow_run(results, "FINISHED")
    assert not (results / tracking.SERVER_FILE).exists()
    assert mlflow.MlflowClient(f"sqlite:///{other}").get_run(parent_id).info.status == "FINISHED"
    assert not (results / "mlflow" / "mlflow.db").exists()
