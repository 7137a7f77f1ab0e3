"""MLflow under load: 64 Slurm jobs logging at once, through the workflow's own `mlflow server`.

A private Slurm cluster (tests/slurm_cluster.py) whose one node claims 64 CPUs (oversubscribed:
the writers mostly wait on the network) runs a 64-task sbatch array of tests/mlflow_load_writer.py.
The workflow run is opened as Snakemake's onstart opens it, with ``tracking.server: auto``, so
panel2patch.tracking starts a real ``mlflow server`` on the embedded SQLite store; every writer waits
until all have started, then creates its nested run over HTTP, logs 10 metrics x 5 steps one call
each, its params and one artifact. Afterwards every run, metric value and artifact must be in the
store, no job log may say "database is locked", the server may have answered no error but 503
(which clients retry; README, MLflow server for clusters), and it must be gone. P2P_LOAD_BACKEND
(e.g. postgresql://user@host:port/db, psycopg2 importable, an empty database) measures another
backend store the same way.

The contrast (test_direct_sqlite_contrast) runs the same writers against the SQLite file directly
(``tracking.server: none``, the one-machine default) and only reports what arrived: losing runs
there is what the server mode is for, not something this test demands.

Slow (a few minutes on 2 cores: 64 Python processes import MLflow). Skips, saying why, only where
Slurm cannot be installed or started; with P2P_REQUIRE_SLURM=1 that is a failure instead.
P2P_LOAD_JOBS / P2P_LOAD_METRICS / P2P_LOAD_STEPS resize it.
"""

from __future__ import annotations

import json
import os
import re
import shlex
import subprocess
import sys
import time
from pathlib import Path

import pytest
from mlflow.tracking import MlflowClient
from mlflow.utils.file_utils import local_file_uri_to_path

from panel2patch import tracking
from slurm_cluster import SlurmCluster, SlurmUnavailable

pytestmark = pytest.mark.slow

REPO = Path(__file__).resolve().parents[1]
WRITER = Path(__file__).resolve().parent / "mlflow_load_writer.py"
N_JOBS = int(os.environ.get("P2P_LOAD_JOBS", "64"))
N_METRICS = int(os.environ.get("P2P_LOAD_METRICS", "10"))
N_STEPS = int(os.environ.get("P2P_LOAD_STEPS", "5"))
TIMEOUT = 1500  # s for the whole array (imports alone take ~3 min of 2 CPUs)
FINAL = {"COMPLETED", "FAILED", "CANCELLED", "TIMEOUT", "NODE_FAIL", "OUT_OF_MEMORY", "PREEMPTED"}
LOCKED = "database is locked"
# The server's backend store: the embedded SQLite file, or e.g. postgresql://user@host/db (with
# psycopg2 importable) to measure a PostgreSQL-backed server the same way.
BACKEND = os.environ.get("P2P_LOAD_BACKEND")


@pytest.fixture(scope="module")
def cluster():
    c = SlurmCluster(cpus=N_JOBS)
    try:
        c.start()
    except SlurmUnavailable as e:
        c.cleanup()
        if os.environ.get("P2P_REQUIRE_SLURM") == "1":
            pytest.fail(f"Slurm required (P2P_REQUIRE_SLURM=1) but unavailable: {e}")
        pytest.skip(f"cannot install or start Slurm: {e}")
    try:
        yield c
    finally:
        c.stop()
        c.cleanup()


@pytest.fixture
def results(tmp_path, monkeypatch):
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    monkeypatch.delenv(tracking.PARENT_ENV, raising=False)
    return tmp_path / "results"


def run_writers(cluster: SlurmCluster, results: Path, work: Path) -> dict:
    """Submit the array (the environment carries the parent run, as Snakemake's jobs get it), wait
    for every task to end; returns per-task states, logs and the writers' JSON lines."""
    ready, logs = work / "ready", work / "logs"
    ready.mkdir(parents=True)
    logs.mkdir()
    env = cluster.env({**os.environ, "PYTHONPATH": str(REPO / "src")})
    wrap = shlex.join([sys.executable, str(WRITER), str(results), str(ready), str(N_JOBS), str(N_METRICS), str(N_STEPS)])
    t0 = time.monotonic()
    sub = subprocess.run(["sbatch", "--parsable", f"--array=0-{N_JOBS - 1}", "--cpus-per-task=1", "--mem=100",
                          "--time=30", "--job-name=mlflow-load", f"--output={logs}/%a.out", "--export=ALL",
                          "--wrap", wrap], env=env, capture_output=True, text=True, timeout=60)
    assert sub.returncode == 0, sub.stderr
    job = sub.stdout.strip().split(";")[0]
    most_running, states = 0, {}
    while True:
        res = subprocess.run(["squeue", "-h", "-r", "-t", "all", "-j", job, "-o", "%i|%T"], env=cluster.env(),
                             capture_output=True, text=True, timeout=30)
        states = dict(line.split("|") for line in res.stdout.split() if "|" in line)
        most_running = max(most_running, sum(s == "RUNNING" for s in states.values()))
        if len(states) == N_JOBS and set(states.values()) <= FINAL:
            break
        if time.monotonic() - t0 > TIMEOUT:
            subprocess.run(["scancel", job], env=cluster.env(), timeout=30)
            pytest.fail(f"array {job} not done after {TIMEOUT} s: {states}")
        time.sleep(1)
    texts = {int(p.stem): p.read_text(errors="replace") for p in logs.glob("*.out")}
    lines = [json.loads(t.strip().splitlines()[-1]) for t in texts.values()
             if t.strip() and t.strip().splitlines()[-1].startswith("{")]
    windows = [(x["start"], x["end"]) for x in lines]
    overlap = max((sum(s <= t < e for s, e in windows) for t, _ in windows), default=0)
    return {"states": states, "logs": texts, "lines": lines, "seconds": time.monotonic() - t0,
            "most_running": most_running, "overlap": overlap,
            "log_seconds": max(e for _, e in windows) - min(s for s, _ in windows) if windows else None}


def audit(store: str, parent_id: str) -> dict:
    """What reached the store (read directly, after the server is gone): the parent's nested runs,
    metric values per run, params and each run's load.json."""
    client = MlflowClient(store)
    exp = client.get_experiment_by_name(tracking.DEFAULT_EXPERIMENT).experiment_id
    runs = {r.info.run_name: r for r in client.search_runs([exp], f"tags.`mlflow.parentRunId` = '{parent_id}'",
                                                          max_results=1000)}
    rows = {r.info.run_id: sum(len(client.get_metric_history(r.info.run_id, f"m{k:02d}")) for k in range(N_METRICS))
            for r in runs.values()}
    metrics_ok = artifacts_ok = finished = 0
    for name, r in runs.items():
        i = int(name.split("-")[-1])
        latest = {f"m{k:02d}": float(i * 1000 + (N_STEPS - 1) * 100 + k) for k in range(N_METRICS)}
        metrics_ok += rows.get(r.info.run_id, 0) == N_METRICS * N_STEPS and r.data.metrics == latest \
            and r.data.params.get("index") == str(i)
        art = Path(local_file_uri_to_path(r.info.artifact_uri)) / "load.json"
        artifacts_ok += art.is_file() and json.loads(art.read_text())["index"] == i
        finished += r.info.status == "FINISHED"
    return {"runs": len(runs), "finished": finished, "metric_rows": sum(rows.get(r.info.run_id, 0) for r in runs.values()),
            "runs_with_all_metrics_and_params": metrics_ok, "artifacts": artifacts_ok}


def summary(name: str, out: dict, store: dict, extra: dict | None = None) -> dict:
    failed = sorted(i for i, t in out["logs"].items() if not t.strip().splitlines()[-1:] or
                    not t.strip().splitlines()[-1].startswith("{"))
    report = {"mode": name, "jobs": N_JOBS, "expected_metric_rows": N_JOBS * N_METRICS * N_STEPS, **store,
              "jobs_completed": sum(s == "COMPLETED" for s in out["states"].values()), "jobs_failed": len(failed),
              "logs_with_database_is_locked": sum(LOCKED in t for t in out["logs"].values()),
              "most_running_at_once": out["most_running"], "writers_logging_at_once": out["overlap"],
              "array_seconds": round(out["seconds"], 1),
              "logging_seconds": out["log_seconds"] and round(out["log_seconds"], 1), **(extra or {})}
    print(f"\nMLFLOW LOAD {json.dumps(report)}")
    return report


def test_64_slurm_jobs_log_at_once_through_the_workflow_server(cluster: SlurmCluster, results: Path, tmp_path: Path):
    tcfg = {"server": "auto", "backend_store_uri": BACKEND}
    parent_id = tracking.start_workflow_run(results, {"inputs": ["load-test"], "tracking": tcfg})
    server = json.loads((results / tracking.SERVER_FILE).read_text())
    try:
        out = run_writers(cluster, results, tmp_path)
    finally:
        tracking.end_workflow_run(results, "FINISHED")
    assert not (results / tracking.SERVER_FILE).exists() and tracking._server_group(server["pid"]) == []
    server_log = (results / tracking.SERVER_LOG).read_text(errors="replace")
    statuses = re.findall(r'HTTP/1.1" (\d\d\d)', server_log)
    store = BACKEND or f"sqlite:///{results / 'mlflow' / 'mlflow.db'}"
    report = summary(f"server ({store.split(':')[0]})", out, audit(store, parent_id),
                     {"server_requests": len(statuses),
                      "server_http_errors": {c: statuses.count(c) for c in sorted(set(statuses)) if c[0] in "45"},
                      "server_errors_database_is_locked": sum(LOCKED in line for line in server_log.splitlines()
                                                              if "ERROR mlflow.server.handlers" in line)})
    bad = {i: t[-1500:] for i, t in out["logs"].items() if LOCKED in t or not t.strip().endswith("}")}
    assert not bad, f"writers failed or hit locks: {dict(list(bad.items())[:3])}"
    assert report["jobs_completed"] == N_JOBS, out["states"]
    assert {x["uri"] for x in out["lines"]} == {server["uri"]}  # every job logged over HTTP
    assert report["runs"] == report["finished"] == N_JOBS
    assert report["metric_rows"] == report["expected_metric_rows"]
    assert report["runs_with_all_metrics_and_params"] == report["artifacts"] == N_JOBS
    # a SQLite server may answer a request 503 at once on a lock (see tracking.SQLITE_BUSY_TIMEOUT);
    # the client retries 503. 404: the experiment looked up before it is
    # created. Any other 4xx or a 500 is not retried: none may occur.
    assert set(report["server_http_errors"]) <= {"503", "404"}, report["server_http_errors"]
    assert report["most_running_at_once"] == N_JOBS  # all 64 Slurm jobs were running together


def test_direct_sqlite_contrast(cluster: SlurmCluster, results: Path, tmp_path: Path):
    """The same writers on the SQLite file itself (no server): measured and printed, not judged."""
    parent_id = tracking.start_workflow_run(results, {"inputs": ["load-test"], "tracking": {"server": "none"}})
    try:
        out = run_writers(cluster, results, tmp_path)
    finally:
        tracking.end_workflow_run(results, "FINISHED")
    report = summary("direct-sqlite", out, audit(f"sqlite:///{results / 'mlflow' / 'mlflow.db'}", parent_id))
    assert len(out["states"]) == N_JOBS and report["runs"] <= N_JOBS
