"""After a crash: MLflow runs left RUNNING by dead processes are marked KILLED when the next
workflow run starts (panel2patch.tracking.recover_dead_runs)."""

from __future__ import annotations

import socket
import subprocess
import sys
import time

import psutil
import pytest
from mlflow.tracking import MlflowClient

from panel2patch import tracking


@pytest.fixture()
def results(tmp_path, monkeypatch):
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    monkeypatch.delenv(tracking.PARENT_ENV, raising=False)  # start_workflow_run sets it
    return tmp_path / "results"


def dead_pid() -> tuple[int, float]:
    """The pid and start time of a process that has exited."""
    proc = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(0.2)"])
    started = psutil.Process(proc.pid).create_time()
    proc.wait()
    return proc.pid, started


def make_run(client, exp, name, level="workflow", host=None, pid=None, started=None, hours_ago=0.0, parent=None):
    """A run as an earlier invocation left it: RUNNING, with its process tags."""
    tags = {"panel2patch.level": level, "host": host or socket.gethostname(), tracking.PID_NS_TAG: tracking._pid_namespace()}
    if pid is not None:
        tags[tracking.PID_TAG] = str(pid)
    if started is not None:
        tags[tracking.PID_STARTED_TAG] = f"{started:.2f}"
    if parent:
        tags["mlflow.parentRunId"] = parent
    run = client.create_run(exp, start_time=int((time.time() - hours_ago * 3600) * 1000), tags=tags, run_name=name)
    return run.info.run_id


def setup_store(results):
    """The store and experiment the workflow uses (created by a first, finished invocation)."""
    tracking.start_workflow_run(results, {"inputs": ["x"]})
    tracking.end_workflow_run(results, "FINISHED")
    uri = tracking.tracking_uri(results)
    client = MlflowClient(uri)
    return client, client.get_experiment_by_name("panel2patch").experiment_id


def test_runs_of_dead_processes_are_killed_and_live_ones_kept(results):
    client, exp = setup_store(results)
    me = psutil.Process()
    pid, started = dead_pid()
    ids = {
        "dead": make_run(client, exp, "dead", pid=pid, started=started),
        "alive": make_run(client, exp, "alive", pid=me.pid, started=me.create_time()),
        "reused": make_run(client, exp, "reused", pid=me.pid, started=me.create_time() - 1000),
        "other-young": make_run(client, exp, "other-young", host="elsewhere.invalid", pid=pid, hours_ago=2),
        "other-stale": make_run(client, exp, "other-stale", host="elsewhere.invalid", pid=pid, hours_ago=200),
        "legacy-stale": make_run(client, exp, "legacy-stale", hours_ago=200),  # no pid recorded
        "legacy-young": make_run(client, exp, "legacy-young", hours_ago=1),
    }
    ids["dead-child"] = make_run(client, exp, "ingest:shard-00000", level="stage", pid=pid, started=started, parent=ids["dead"])
    # a long run on another host whose last job started an hour ago is active, not stale
    ids["other-active"] = make_run(client, exp, "other-active", host="elsewhere.invalid", pid=pid, hours_ago=500)
    make_run(client, exp, "train:tiny", level="stage", host="elsewhere.invalid", hours_ago=1, parent=ids["other-active"])

    new = tracking.start_workflow_run(results, {"inputs": ["x"]})

    status = {k: client.get_run(v).info.status for k, v in ids.items()}
    assert status == {"dead": "KILLED", "dead-child": "KILLED", "reused": "KILLED", "other-stale": "KILLED",
                      "legacy-stale": "KILLED", "alive": "RUNNING", "other-young": "RUNNING",
                      "legacy-young": "RUNNING", "other-active": "RUNNING"}
    dead = client.get_run(ids["dead"])
    assert dead.data.tags[tracking.RECOVERED_BY_TAG] == new
    assert f"process {pid} on {socket.gethostname()} is gone" in dead.data.tags[tracking.RECOVERED_REASON_TAG]
    assert dead.info.end_time is not None
    assert "later process" in client.get_run(ids["reused"]).data.tags[tracking.RECOVERED_REASON_TAG]
    assert "cannot be checked" in client.get_run(ids["other-stale"]).data.tags[tracking.RECOVERED_REASON_TAG]
    assert client.get_run(new).info.status == "RUNNING"
    # the new parent records its own process, so the run after it can tell whether it died
    tags = client.get_run(new).data.tags
    assert tags[tracking.PID_TAG] == str(me.pid) and abs(float(tags[tracking.PID_STARTED_TAG]) - me.create_time()) < 1


def test_stale_limit_is_configurable_and_can_be_off(results):
    client, exp = setup_store(results)
    stale = make_run(client, exp, "other", host="elsewhere.invalid", pid=1, hours_ago=10)
    tracking.start_workflow_run(results, {"inputs": ["x"], "tracking": {"stale_after_hours": None}})
    assert client.get_run(stale).info.status == "RUNNING"
    tracking.start_workflow_run(results, {"inputs": ["x"], "tracking": {"stale_after_hours": 24}})
    assert client.get_run(stale).info.status == "RUNNING"
    tracking.start_workflow_run(results, {"inputs": ["x"], "tracking": {"stale_after_hours": 5}})
    assert client.get_run(stale).info.status == "KILLED"
