"""After a crash: MLflow runs left RUNNING by dead processes are marked KILLED when the next
workflow run starts (panel2patch.tracking.recover_dead_runs)."""

from __future__ import annotations

import hashlib
import json
import os
import socket
import subprocess
import sys
import time
from pathlib import Path

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


def test_an_exited_process_not_yet_reaped_is_dead(results):
    client, exp = setup_store(results)
    proc = subprocess.Popen([sys.executable, "-c", "pass"])  # a zombie until waited for
    started = psutil.Process(proc.pid).create_time()
    try:
        deadline = time.time() + 30
        while psutil.Process(proc.pid).status() != psutil.STATUS_ZOMBIE and time.time() < deadline:
            time.sleep(0.05)
        run = client.get_run(make_run(client, exp, "zombie", pid=proc.pid, started=started))
        assert tracking.dead_reason(run) == f"process {proc.pid} on {socket.gethostname()} has exited"
    finally:
        proc.wait()


def test_stale_limit_is_configurable_and_can_be_off(results):
    client, exp = setup_store(results)
    stale = make_run(client, exp, "other", host="elsewhere.invalid", pid=1, hours_ago=10)
    tracking.start_workflow_run(results, {"inputs": ["x"], "tracking": {"stale_after_hours": None}})
    assert client.get_run(stale).info.status == "RUNNING"
    tracking.start_workflow_run(results, {"inputs": ["x"], "tracking": {"stale_after_hours": 24}})
    assert client.get_run(stale).info.status == "RUNNING"
    tracking.start_workflow_run(results, {"inputs": ["x"], "tracking": {"stale_after_hours": 5}})
    assert client.get_run(stale).info.status == "KILLED"


# --- panel2patch recover: the one command after a crash ---------------------------------------

PANEL2PATCH = str(Path(sys.executable).with_name("panel2patch"))


def test_recover_refuses_while_snakemake_runs_in_the_directory(tmp_path):
    work = tmp_path / "wf"
    (work / ".snakemake" / "locks").mkdir(parents=True)
    (work / ".snakemake" / "locks" / "0.input.lock").write_text("x\n")
    fake = tmp_path / "bin" / "snakemake"  # a process whose command line is Snakemake's
    fake.parent.mkdir()
    fake.write_text("import time\ntime.sleep(60)\n")
    live = subprocess.Popen([sys.executable, str(fake), "--cores", "2"], cwd=work / ".snakemake")
    try:
        proc = subprocess.run([PANEL2PATCH, "recover", "--cores", "2"], cwd=work, capture_output=True, text=True, timeout=120)
    finally:
        live.kill()
        live.wait()
    assert proc.returncode == 1 and f"{live.pid}:" in proc.stderr and "not unlocking" in proc.stderr
    assert (work / ".snakemake" / "locks" / "0.input.lock").exists()


def test_recover_refuses_while_the_recorded_workflow_run_may_be_alive(results, monkeypatch):
    from panel2patch import recover

    client, exp = setup_store(results)
    parent_file = results / tracking.PARENT_FILE
    info = json.loads(parent_file.read_text())
    assert recover.live_parent_run(results.parent) is None  # the recorded run finished
    for host, pid, alive in (("elsewhere.invalid", 1, True), (socket.gethostname(), os.getpid(), True),
                             (socket.gethostname(), dead_pid()[0], False)):
        run_id = make_run(client, exp, "workflow", host=host, pid=pid)
        parent_file.write_text(json.dumps({**info, "run_id": run_id}))
        reason = recover.live_parent_run(results.parent)
        assert (reason is not None) == alive, (host, pid, reason)
    # the parent (of this host) is dead, but a job it submitted to Slurm may still run
    job = make_run(client, exp, "ingest:shard-00000", level="stage", host="node1.invalid", parent=run_id)
    client.set_tag(job, "slurm.job_id", "4242")
    bin_ = results.parent / "bin"
    bin_.mkdir()
    monkeypatch.setenv("PATH", str(bin_))
    assert "squeue cannot tell" in recover.live_parent_run(results.parent)  # no Slurm here
    squeue = bin_ / "squeue"
    squeue.write_text("#!/bin/sh\necho 17\necho 4242\n")
    squeue.chmod(0o755)
    assert "Slurm jobs 4242 of the run are still queued or running" in recover.live_parent_run(results.parent)
    squeue.write_text("#!/bin/sh\necho 17\n")
    assert recover.live_parent_run(results.parent) is None


@pytest.mark.slow
def test_kill_9_then_recover_completes_and_marks_the_dead_run_killed(tmp_path_factory):
    """The real workflow on the sample, killed (-9, the whole process group) while its ingest jobs
    run; ``panel2patch recover`` with the same arguments finishes it, with the clean run's outputs."""
    from test_workflow import copy_repo, snakemake

    target = "results/ingest/summary.json"  # the first two stages: ingest per shard, then the summary
    clean = copy_repo(tmp_path_factory.mktemp("clean"))
    proc = snakemake(clean, target)
    assert proc.returncode == 0, proc.stderr[-4000:]

    work = copy_repo(tmp_path_factory.mktemp("crash"))
    env = {**os.environ, "PATH": f"{Path(sys.executable).parent}:{os.environ['PATH']}",
           "PYTHONPATH": os.pathsep.join(filter(None, [str(work / "src"), os.environ.get("PYTHONPATH")]))}
    env.pop("MLFLOW_TRACKING_URI", None)
    run = subprocess.Popen([str(Path(sys.executable).with_name("snakemake")), "--cores", "2", target], cwd=work,
                           env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)
    parent_file = work / "results" / tracking.PARENT_FILE
    deadline = time.time() + 300
    client = None
    try:
        while time.time() < deadline and run.poll() is None:  # until an ingest job has opened its run
            if client is None and parent_file.exists():
                client = MlflowClient(json.loads(parent_file.read_text())["tracking_uri"])
            incomplete = work / ".snakemake" / "incomplete"  # a job's outputs are marked as being written
            if client is not None and incomplete.is_dir() and any(incomplete.iterdir()) and any(
                    r.data.tags.get("panel2patch.stage") == "ingest" for r in client.search_runs(
                        [json.loads(parent_file.read_text())["experiment_id"]], "attributes.status = 'RUNNING'")):
                break
            time.sleep(0.2)
        assert run.poll() is None, "the workflow ended before it could be killed"
    finally:
        os.killpg(run.pid, 9)
        run.wait()
    dead_parent = json.loads(parent_file.read_text())["run_id"]
    assert (work / ".snakemake" / "locks").is_dir() and any((work / ".snakemake" / "incomplete").iterdir())
    assert client.get_run(dead_parent).info.status == "RUNNING"  # what the crash leaves

    proc = subprocess.run([str(Path(sys.executable).with_name("panel2patch")), "recover", "--cores", "2", target],
                          cwd=work, env=env, capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr[-4000:]
    proc = snakemake(work, "-n", target)
    assert proc.returncode == 0 and "Nothing to be done" in proc.stdout + proc.stderr

    def outputs(root):
        files = [p for pat in ("results/shard-*/ingest/**/*", "results/ingest/*") for p in root.glob(pat) if p.is_file()]
        return {p.relative_to(root).as_posix(): hashlib.sha256(p.read_bytes()).hexdigest() for p in files}

    assert outputs(work) == outputs(clean) and "results/ingest/summary.json" in outputs(work)

    exp = json.loads(parent_file.read_text())["experiment_id"]
    new_parent = json.loads(parent_file.read_text())["run_id"]
    runs = {r.info.run_id: r for r in client.search_runs([exp], max_results=1000)}
    killed = runs[dead_parent]
    assert killed.info.status == "KILLED" and killed.data.tags[tracking.RECOVERED_BY_TAG] == new_parent
    assert "is gone" in killed.data.tags[tracking.RECOVERED_REASON_TAG]
    assert runs[new_parent].info.status == "FINISHED"
    dead_jobs = [r for r in runs.values() if r.data.tags.get("mlflow.parentRunId") == dead_parent]
    assert dead_jobs and {r.info.status for r in dead_jobs} <= {"KILLED", "FINISHED"}
    assert "KILLED" in {r.info.status for r in dead_jobs}
    assert not [r for r in runs.values() if r.info.status == "RUNNING"]
