"""MLflow lineage: one parent run per workflow invocation, one nested run per rule job.

Where the runs go (first match wins):
1. ``MLFLOW_TRACKING_URI`` in the environment (e.g. a tracking server on a cluster);
2. ``tracking.uri`` in ``config/config.yaml``;
3. the embedded default, a SQLite store ``<results>/mlflow/mlflow.db`` with artifacts in
   ``<results>/mlflow/artifacts`` (no server to start). Open it with
   ``mlflow ui --backend-store-uri sqlite:///results/mlflow/mlflow.db``.

The workflow's ``onstart`` handler (which Snakemake runs once, in the main process, never inside
jobs) creates the parent run, puts its id in ``$P2P_MLFLOW_PARENT`` (inherited by every job, on
Slurm too) and in ``<results>/mlflow/parent_run.json``; every job nests its run under it. A job run by hand
(the CLI, or with no running parent) gets a top-level run of its own.

Every run records the process that owns it (tags ``host``, ``panel2patch.pid``,
``panel2patch.pid_started``, ``panel2patch.pid_ns``). A run left RUNNING by a process that died
(kill -9, power loss, OOM killer) is marked KILLED when the next workflow run starts
(:func:`recover_dead_runs`), with ``panel2patch.recovered_by`` (the new parent run's id) and
``panel2patch.recovered_reason``. A run is judged dead only when that can be checked here: same
host and pid namespace, and the pid is gone or now belongs to a process started at another time.
A run from another host (a Slurm job, another login node, another container) cannot be checked and
is left alone until its last activity is older than ``tracking.stale_after_hours`` (default 168;
null = never).
"""

from __future__ import annotations

import contextlib
import getpass
import hashlib
import json
import os
import platform
import socket
import subprocess
import sys
import time
from pathlib import Path

import mlflow
import psutil
from mlflow.exceptions import MlflowException
from mlflow.tracking import MlflowClient

import panel2patch

DEFAULT_EXPERIMENT = "panel2patch"
PARENT_FILE = "mlflow/parent_run.json"
PARENT_ENV = "P2P_MLFLOW_PARENT"
PID_TAG = "panel2patch.pid"
PID_STARTED_TAG = "panel2patch.pid_started"
PID_NS_TAG = "panel2patch.pid_ns"
RECOVERED_BY_TAG = "panel2patch.recovered_by"
RECOVERED_REASON_TAG = "panel2patch.recovered_reason"
DEFAULT_STALE_AFTER_HOURS = 168


_uri_set_here: str | None = None  # mlflow.set_tracking_uri also exports MLFLOW_TRACKING_URI


def _use_uri(uri: str) -> None:
    global _uri_set_here
    mlflow.set_tracking_uri(uri)
    _uri_set_here = os.environ.get("MLFLOW_TRACKING_URI")


def tracking_uri(results_dir: str | Path, configured: str | None = None) -> str:
    env = os.environ.get("MLFLOW_TRACKING_URI")
    if env and env != _uri_set_here:  # the user's, not the one an earlier call here exported
        return env
    if configured:
        return configured
    db = Path(results_dir).resolve() / "mlflow" / "mlflow.db"
    db.parent.mkdir(parents=True, exist_ok=True)
    return f"sqlite:///{db}"


def _experiment_id(results_dir: Path, uri: str, name: str) -> str:
    _use_uri(uri)
    exp = mlflow.get_experiment_by_name(name)
    if exp is not None:
        return exp.experiment_id
    artifacts = None
    if uri.startswith("sqlite:") or uri.startswith("file:") or "://" not in uri:
        artifacts = (Path(results_dir).resolve() / "mlflow" / "artifacts").as_uri()
    try:
        return mlflow.create_experiment(name, artifact_location=artifacts)
    except MlflowException:  # created by a concurrent job in the meantime
        return mlflow.get_experiment_by_name(name).experiment_id


def flatten(d: dict, prefix: str = "") -> dict[str, str]:
    """Nested config -> {"ingest.pdf_dpi": "150", ...} with values as MLflow param strings."""
    out: dict[str, str] = {}
    for k, v in d.items():
        key = f"{prefix}{k}"
        if isinstance(v, dict):
            out.update(flatten(v, key + "."))
        else:
            text = v if isinstance(v, str) else json.dumps(v, default=str)
            out[key] = text[:6000]
    return out


# files that tools drop into output folders after the fact: not part of the content
_NOT_CONTENT = {".snakemake_timestamp"}


def sha256_path(path: Path) -> str:
    """sha256 of a file; for a folder, of its sorted ``relative-path sha256`` lines (Snakemake's
    ``.snakemake_timestamp``, written into output folders after the job, is left out so the hash
    logged by the job reproduces)."""
    path = Path(path)
    if path.is_dir():
        lines = [f"{p.relative_to(path).as_posix()} {sha256_path(p)}" for p in sorted(path.rglob("*"))
                 if p.is_file() and p.name not in _NOT_CONTENT]
        return hashlib.sha256("\n".join(lines).encode()).hexdigest()
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        for block in iter(lambda: fh.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def _git_commit() -> str | None:
    try:
        return subprocess.run(["git", "rev-parse", "HEAD"], capture_output=True, text=True, timeout=10,
                              cwd=Path(__file__).resolve().parent).stdout.strip() or None
    except (OSError, subprocess.SubprocessError):
        return None


def _pid_namespace() -> str:
    """The pid namespace of this process ("" where there is none to read): pids of two namespaces
    on one host (containers sharing the host's name) are not comparable."""
    try:
        return os.readlink("/proc/self/ns/pid")
    except OSError:
        return ""


def _process_tags() -> dict[str, str]:
    """The process that owns a run: pid and its start time (a pid reused later has another)."""
    return {PID_TAG: str(os.getpid()), PID_STARTED_TAG: f"{psutil.Process().create_time():.2f}",
            PID_NS_TAG: _pid_namespace()}


def _context_tags() -> dict[str, str]:
    tags = {
        "panel2patch.version": panel2patch.__version__,
        "host": socket.gethostname(),
        "user": getpass.getuser(),
        "python": platform.python_version(),
        "command": " ".join(sys.argv)[:5000],
        **_process_tags(),
    }
    if commit := _git_commit():
        tags["mlflow.source.git.commit"] = commit
    if os.environ.get("SLURM_JOB_ID"):
        tags["slurm.job_id"] = os.environ["SLURM_JOB_ID"]
    return tags


def start_workflow_run(results_dir: str | Path, config: dict, manifest=None) -> str:
    """Create the invocation's parent run (left open) and record its id for the jobs."""
    results_dir = Path(results_dir)
    tcfg = config.get("tracking", {}) or {}
    uri = tracking_uri(results_dir, tcfg.get("uri"))
    exp = _experiment_id(results_dir, uri, tcfg.get("experiment", DEFAULT_EXPERIMENT))
    with mlflow.start_run(experiment_id=exp, run_name=f"workflow {time.strftime('%Y-%m-%d %H:%M:%S')}",
                          tags={**_context_tags(), "panel2patch.level": "workflow"}) as run:
        mlflow.log_params(flatten(config))
        mlflow.log_dict(config, "config.json")
        if manifest is not None and len(manifest):
            mlflow.log_input(mlflow.data.from_pandas(manifest, source=str(results_dir), name="input-units"), context="workflow")
        run_id = run.info.run_id
    # start_run's context closed the run; reopen it as RUNNING until onsuccess/onerror.
    MlflowClient(uri).update_run(run_id, status="RUNNING")
    try:
        for old_id, reason in recover_dead_runs(uri, exp, run_id, tcfg.get("stale_after_hours", DEFAULT_STALE_AFTER_HOURS)):
            print(f"panel2patch: MLflow run {old_id} was left RUNNING; marked KILLED ({reason})", file=sys.stderr)
    except Exception as exc:  # housekeeping: never stops the workflow
        print(f"panel2patch: could not check for runs left RUNNING by a crash: {exc!r}", file=sys.stderr)
    info = json.dumps({"run_id": run_id, "experiment_id": exp, "tracking_uri": uri})
    parent = results_dir / PARENT_FILE
    parent.parent.mkdir(parents=True, exist_ok=True)
    parent.write_text(info)
    # Jobs inherit the environment (local subprocesses, and sbatch --export=ALL on Slurm), so
    # they find the parent even where the file is not (yet) visible on their node.
    os.environ[PARENT_ENV] = info
    return run_id


def dead_reason(run, stale_after_hours: float | None = DEFAULT_STALE_AFTER_HOURS,
                last_activity_ms: int | None = None, now: float | None = None) -> str | None:
    """Why ``run`` (RUNNING) belongs to a process that is no longer alive, or None when it is
    alive or cannot be told to be dead. See the module docstring for the rules."""
    tags = run.data.tags
    host, pid = tags.get("host"), tags.get(PID_TAG)
    same_ns = tags.get(PID_NS_TAG, "") == _pid_namespace()
    if host == socket.gethostname() and pid and same_ns:
        try:
            proc = psutil.Process(int(pid))
            started, zombie = proc.create_time(), proc.status() == psutil.STATUS_ZOMBIE
        except psutil.NoSuchProcess:
            return f"process {pid} on {host} is gone"
        except (psutil.Error, ValueError):
            return None
        if zombie:
            return f"process {pid} on {host} has exited"
        recorded = tags.get(PID_STARTED_TAG)
        if recorded and abs(started - float(recorded)) > 2.0:
            return f"process {pid} on {host} is gone (the pid now belongs to a later process)"
        return None
    if stale_after_hours is None:
        return None
    now = time.time() if now is None else now
    last = max(run.info.start_time or 0, last_activity_ms or 0) / 1000
    hours = (now - last) / 3600
    if hours > stale_after_hours:
        where = f"on {host or 'an unknown host'}" + ("" if pid else ", no pid recorded")
        return f"its process {where} cannot be checked from here and its last activity was {hours:.0f} h ago (stale_after_hours {stale_after_hours:g})"
    return None


def _search_all(client: MlflowClient, exp: str, filter_string: str) -> list:
    runs, token = [], None
    while True:
        page = client.search_runs([exp], filter_string=filter_string, max_results=1000, page_token=token)
        runs.extend(page)
        token = page.token
        if not token:
            return runs


def recover_dead_runs(uri: str, experiment_id: str, recovered_by: str,
                      stale_after_hours: float | None = DEFAULT_STALE_AFTER_HOURS) -> list[tuple[str, str]]:
    """Mark KILLED every panel2patch run of the experiment (workflow parents and stage runs) left
    RUNNING by a process that is no longer alive; returns ``(run_id, reason)`` for each."""
    client = MlflowClient(uri)
    running = [r for r in _search_all(client, experiment_id, "attributes.status = 'RUNNING'")
               if r.info.run_id != recovered_by and r.data.tags.get("panel2patch.level") in ("workflow", "stage")]
    recovered = []
    for run in running:
        last = None
        if run.data.tags.get("panel2patch.level") == "workflow":  # its last activity: its latest job
            latest = client.search_runs([experiment_id], f"tags.`mlflow.parentRunId` = '{run.info.run_id}'",
                                        max_results=1, order_by=["attributes.start_time DESC"])
            last = (latest[0].info.end_time or latest[0].info.start_time) if latest else None
        reason = dead_reason(run, stale_after_hours, last)
        if reason is None:
            continue
        client.set_tag(run.info.run_id, RECOVERED_BY_TAG, recovered_by)
        client.set_tag(run.info.run_id, RECOVERED_REASON_TAG, reason[:5000])
        client.set_terminated(run.info.run_id, status="KILLED")
        recovered.append((run.info.run_id, reason))
    return recovered


def end_workflow_run(results_dir: str | Path, status: str = "FINISHED") -> None:
    parent = Path(results_dir) / PARENT_FILE
    if not parent.exists():
        return
    info = json.loads(parent.read_text())
    MlflowClient(info["tracking_uri"]).set_terminated(info["run_id"], status=status)


class StageRun:
    """Handle on a job's nested run: metrics, input manifest and output hashes."""

    def __init__(self, run, results_dir: Path):
        self.run = run
        self.run_id = run.info.run_id
        self.results_dir = results_dir

    def log_metrics(self, metrics: dict, step: int | None = None) -> None:
        flat = {}
        for k, v in metrics.items():
            if isinstance(v, dict):
                flat.update({f"{k}.{kk}": vv for kk, vv in v.items() if isinstance(vv, (int, float))})
            elif isinstance(v, (int, float)) and not isinstance(v, bool):
                flat[k] = v
        mlflow.log_metrics(flat, step=step)

    def log_manifest(self, df, name: str, context: str = "input") -> None:
        """Log a table of inputs (paths, sizes, sha256) as the run's dataset input."""
        # mlflow's own digest fails on an empty frame with Arrow string columns (a shard whose
        # articles gave no figure): name the empty table by its columns instead
        digest = hashlib.sha256(",".join(map(str, df.columns)).encode()).hexdigest()[:8] if df.empty else None
        mlflow.log_input(mlflow.data.from_pandas(df, source=str(self.results_dir), name=name, digest=digest),
                         context=context)

    def log_outputs(self, paths: dict[str, str | Path]) -> dict[str, dict]:
        """sha256 (and size) of every output: an ``outputs.json`` artifact and one tag per output."""
        record = {}
        for name, p in paths.items():
            p = Path(p)
            if not p.exists():
                continue
            size = sum(f.stat().st_size for f in p.rglob("*") if f.is_file()) if p.is_dir() else p.stat().st_size
            record[name] = {"path": str(p), "sha256": sha256_path(p), "bytes": size}
            mlflow.set_tag(f"output.{name}.sha256", record[name]["sha256"])
        mlflow.log_dict(record, "outputs.json")
        return record


@contextlib.contextmanager
def stage_run(stage: str, name: str, params: dict, results_dir: str | Path, tracking_cfg: dict | None = None):
    """Nested run ``<stage>:<name>`` under the invocation's parent run (or top-level without one)."""
    results_dir = Path(results_dir)
    tracking_cfg = tracking_cfg or {}
    parent_file = results_dir / PARENT_FILE
    if os.environ.get(PARENT_ENV):
        parent = json.loads(os.environ[PARENT_ENV])
    else:
        parent = json.loads(parent_file.read_text()) if parent_file.exists() else None
    if parent and MlflowClient(parent["tracking_uri"]).get_run(parent["run_id"]).info.status != "RUNNING":
        parent = None  # left over from a finished invocation: this job was started by hand
    user_uri = os.environ.get("MLFLOW_TRACKING_URI") not in (None, "", _uri_set_here)
    if parent and not user_uri:
        uri, exp = parent["tracking_uri"], parent["experiment_id"]
        _use_uri(uri)
    else:
        uri = tracking_uri(results_dir, tracking_cfg.get("uri"))
        exp = _experiment_id(results_dir, uri, tracking_cfg.get("experiment", DEFAULT_EXPERIMENT))
    tags = {**_context_tags(), "panel2patch.level": "stage", "panel2patch.stage": stage}
    with mlflow.start_run(experiment_id=exp, run_name=f"{stage}:{name}", parent_run_id=parent and parent["run_id"],
                          nested=bool(parent), tags=tags) as run:
        mlflow.log_params(flatten(params))
        yield StageRun(run, results_dir)
