"""MLflow lineage: one parent run per workflow invocation, one nested run per rule job.

Where the runs go (first match wins):
0. ``tracking.server: auto``: a ``mlflow server`` the workflow run starts for itself on the
   submitting host (:func:`start_server`; backend ``tracking.backend_store_uri``, else the embedded
   store below) and stops at its end; jobs log over HTTP. ``tracking.server: <http(s) URL>``: that server;
1. ``MLFLOW_TRACKING_URI`` in the environment (e.g. a tracking server on a cluster);
2. ``tracking.uri`` in ``config/config.yaml``;
3. the embedded default, a SQLite store ``<results>/mlflow/mlflow.db`` with artifacts in
   ``<results>/mlflow/artifacts`` (no server to start). Open it with
   ``mlflow ui --backend-store-uri sqlite:///results/mlflow/mlflow.db``.

Artifacts of an experiment the workflow creates go to ``tracking.artifact_location`` (null: the
embedded ``<results>/mlflow/artifacts``). MLflow's SQLite store records artifact locations as
absolute paths; an experiment created at the embedded location (tag ``panel2patch.artifacts =
results``) is re-pointed at the folder it now lies in by :func:`relocate_store`, which every
workflow run calls (after ``mv``/``cp -r results elsewhere``), as does
``python -m panel2patch.tracking relocate <results>`` (before ``mlflow ui`` on a copy).

The workflow's ``onstart`` handler (which Snakemake runs once, in the main process, never inside
jobs) opens the parent run, puts its id in ``$P2P_MLFLOW_PARENT`` (inherited by every job, on
Slurm too) and in ``<results>/mlflow/parent_run.json``; every job nests its run under it. A job run by hand
(the CLI, or with no running parent) gets a top-level run of its own.

Partial reruns: an invocation whose config equals the one recorded on the results folder's last
parent run, once that run has ended (FINISHED, FAILED or KILLED), attaches to it again (``snakemake
-R text``, an output deleted and rebuilt, a library edit that reruns some rules): its jobs nest
under the same parent, tagged ``panel2patch.invocation`` = n, and the parent keeps one
``invocations/<n>.json`` per invocation. A changed config, or a parent left RUNNING (a crash:
see below), starts a new parent. Every parent and stage run that ever wrote into one results
folder carries the same ``panel2patch.run_group`` tag::

    mlflow.search_runs(experiment_names=["panel2patch"], filter_string="tags.`panel2patch.run_group` = '<id>'")

Dataset inputs list their rows: :meth:`StageRun.log_manifest` logs the table as an artifact
(``datasets/<name>.csv``; Parquet above :data:`CSV_MAX_ROWS` rows) and the dataset's source is that
artifact, ``runs:/<run id>/datasets/<name>.csv`` (source type ``mlflow_run_artifact``;
``mlflow.data.get_source(dataset_input).load()`` downloads it).

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

import atexit
import contextlib
import getpass
import hashlib
import json
import os
import platform
import signal
import socket
import sqlite3
import subprocess
import sys
import tempfile
import time
import urllib.request
import uuid
import warnings
from pathlib import Path
from typing import Any

import mlflow
import psutil
from mlflow.data.dataset_source import DatasetSource
from mlflow.data.dataset_source_registry import register_dataset_source
from mlflow.data.digest_utils import compute_pandas_digest
from mlflow.entities import DatasetInput, InputTag
from mlflow.exceptions import MlflowException
from mlflow.tracking import MlflowClient

from panel2patch.digest import sha256_path  # noqa: F401  (re-exported: the name users and the audit know)
from mlflow.utils.mlflow_tags import MLFLOW_DATASET_CONTEXT

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
RUN_GROUP_TAG = "panel2patch.run_group"
INVOCATION_TAG = "panel2patch.invocation"  # stage runs: which invocation of their parent ran them
INVOCATIONS_TAG = "panel2patch.invocations"  # parent runs: how many invocations attached to it
ARTIFACTS_TAG = "panel2patch.artifacts"  # experiment tag: "results" = at <results>/mlflow/artifacts
CSV_MAX_ROWS = 50_000  # dataset tables up to this many rows as CSV (the MLflow UI shows them), else Parquet


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


def _embedded_db(results_dir: str | Path) -> Path:
    return Path(results_dir).resolve() / "mlflow" / "mlflow.db"


def _embedded_artifacts(results_dir: str | Path) -> str:
    return (Path(results_dir).resolve() / "mlflow" / "artifacts").as_uri()


def _experiment_id(results_dir: Path, uri: str, name: str, artifact_location: str | None = None,
                   local_artifacts: bool = False) -> str:
    """The experiment ``name`` in the store at ``uri``, created if new: its artifacts at
    ``artifact_location`` (a path relative to the working directory, or a URI), else, for a
    local store or the workflow's own server (``local_artifacts``), at the embedded
    ``<results>/mlflow/artifacts`` (tagged so that :func:`relocate_store` can move it with the folder)."""
    if uri == f"sqlite:///{_embedded_db(results_dir)}":
        relocate_store(results_dir)  # results/ moved or copied since the experiment was made
    _use_uri(uri)
    exp = mlflow.get_experiment_by_name(name)
    if exp is not None:
        return exp.experiment_id
    tags = None
    if artifact_location:
        artifacts = artifact_location if "://" in artifact_location else Path(artifact_location).resolve().as_uri()
    elif local_artifacts or uri.startswith("sqlite:") or uri.startswith("file:") or "://" not in uri:
        artifacts, tags = _embedded_artifacts(results_dir), {ARTIFACTS_TAG: "results"}
    else:
        artifacts = None  # a tracking server: its own artifact root
    try:
        return mlflow.create_experiment(name, artifact_location=artifacts, tags=tags)
    except MlflowException:  # created by a concurrent job in the meantime
        return mlflow.get_experiment_by_name(name).experiment_id


def relocate_store(results_dir: str | Path) -> dict[str, str]:
    """Point the embedded store's experiments that keep their artifacts in ``<results>/mlflow/artifacts``
    (tag ``panel2patch.artifacts = results``) at the folder the store lies in now, after
    ``results/`` was moved or copied. MLflow records artifact locations as absolute URIs in
    experiments, runs, logged models and model versions; every text value starting with the old
    location is rewritten (file URI and plain path forms). Returns ``{old: new}`` for each
    location changed (empty when nothing had moved or there is no store)."""
    db = _embedded_db(results_dir)
    if not db.is_file():
        return {}
    new_uri = _embedded_artifacts(results_dir)
    con = sqlite3.connect(db, timeout=60)
    try:
        try:
            olds = {loc for (loc,) in con.execute(
                "SELECT e.artifact_location FROM experiments e JOIN experiment_tags t ON t.experiment_id = e.experiment_id "
                "WHERE t.key = ? AND t.value = 'results'", (ARTIFACTS_TAG,))}
        except sqlite3.OperationalError:  # not (yet) an MLflow store
            return {}
        olds = {o.rstrip("/") for o in olds if o and o.rstrip("/") != new_uri}
        if not olds:
            return {}
        from mlflow.utils.file_utils import local_file_uri_to_path

        tables = [t for (t,) in con.execute("SELECT name FROM sqlite_master WHERE type = 'table'")]
        columns = {t: [c[1] for c in con.execute(f'PRAGMA table_info("{t}")') if "CHAR" in c[2].upper() or "TEXT" in c[2].upper()]
                   for t in tables}
        with con:
            for old in olds:
                for old_form, new_form in ((old, new_uri), (local_file_uri_to_path(old), local_file_uri_to_path(new_uri))):
                    for t, cols in columns.items():
                        for c in cols:
                            con.execute(f'UPDATE "{t}" SET "{c}" = ? || substr("{c}", ?) '
                                        f'WHERE "{c}" = ? OR substr("{c}", 1, ?) = ?',
                                        (new_form, len(old_form) + 1, old_form, len(old_form) + 1, old_form + "/"))
        return {old: new_uri for old in olds}
    finally:
        con.close()


# --------------------------------------------------------------- the workflow's own tracking server
# tracking.server: auto. Many jobs writing one SQLite file at once can fail with "database is
# locked"; with a server only the server's process writes the store, and the jobs log over HTTP.
SERVER_FILE = "mlflow/server.json"  # uri, pid and start time of the running server
SERVER_LOG = "logs/mlflow-server.log"
SERVER_START_TIMEOUT = 180.0  # s until /health answers (starting mlflow on a busy 2-core node took ~25 s)
# The server's request threads (up to 40 per worker) each open their own database connection
# (NullPool): with SQLAlchemy's default pool of 5+10 connections, 64 jobs got HTTP 400 "QueuePool
# limit ... reached" (which clients do not retry) from a SQLite and from a PostgreSQL backend alike.
# A SQLite backend waits up to this long for the write lock (SQLite's default is 5 s); a request
# that SQLite fails at once with "database is locked" (a transaction that read and then wants to
# write while another commits: it cannot wait there) is answered 503, and the MLflow client retries.
# PostgreSQL has no such lock (README: MLflow server for clusters).
SQLITE_BUSY_TIMEOUT = 600
_server_proc: subprocess.Popen | None = None  # the server this process started


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("", 0))
        return s.getsockname()[1]


def _server_group(pgid: int) -> list[str]:
    """Command lines of the live processes of group ``pgid`` (zombies do not count)."""
    if _server_proc is not None:
        _server_proc.poll()  # reap our own child
    out = []
    for proc in psutil.process_iter(["status"]):
        try:
            if os.getpgid(proc.pid) == pgid and proc.info["status"] != psutil.STATUS_ZOMBIE:
                out.append(" ".join(proc.cmdline()))
        except (OSError, psutil.Error):
            continue
    return out


def start_server(results_dir: str | Path, tcfg: dict | None = None) -> str:
    """Start ``mlflow server`` for this workflow run and return its ``http://host:port`` URI.

    Backend store: ``tracking.backend_store_uri`` (e.g. ``postgresql://user@dbhost/mlflow``), else
    the embedded ``<results>/mlflow/mlflow.db`` (the same store as without a server). Artifacts:
    new experiments keep them in ``<results>/mlflow/artifacts`` (jobs write there directly, so
    ``results/`` must be on a file system the nodes share); ``--artifacts-destination`` is that
    folder too. The server listens on all interfaces, on a free port; jobs reach it by
    ``tracking.server_host`` (default: this host's name). Its pid goes to ``<results>/mlflow/server.json``
    and its log to ``<results>/logs/mlflow-server.log``; a server left there by a crashed run is
    stopped first, and this process stops it at exit if :func:`stop_server` was not called."""
    global _server_proc
    results_dir = Path(results_dir).resolve()
    tcfg = tcfg or {}
    stop_server(results_dir)
    backend = tcfg.get("backend_store_uri") or f"sqlite:///{_embedded_db(results_dir)}"
    if backend == f"sqlite:///{_embedded_db(results_dir)}":
        _embedded_db(results_dir).parent.mkdir(parents=True, exist_ok=True)
        relocate_store(results_dir)  # while no server holds the store
    env = {k: v for k, v in os.environ.items() if k != "MLFLOW_TRACKING_URI"}
    env["MLFLOW_SERVER_ENABLE_JOB_EXECUTION"] = "false"  # no background job runners (a dozen idle processes)
    env.setdefault("MLFLOW_SQLALCHEMYSTORE_POOLCLASS", "NullPool")
    if backend.startswith("sqlite:") and "?" not in backend:
        backend += f"?timeout={SQLITE_BUSY_TIMEOUT}"
    host, port = tcfg.get("server_host") or socket.gethostname(), _free_port()
    uri = f"http://{host}:{port}"
    allowed = [f"{h}{p}" for h in dict.fromkeys([host, "localhost", "127.0.0.1"]) for p in ("", f":{port}")]
    cmd = [sys.executable, "-m", "mlflow", "server", "--backend-store-uri", backend,
           "--artifacts-destination", _embedded_artifacts(results_dir), "--host", "0.0.0.0", "--port", str(port),
           "--workers", str(tcfg.get("server_workers") or 1), "--allowed-hosts", ",".join(allowed)]
    log = results_dir / SERVER_LOG
    for folder in (log.parent, (results_dir / SERVER_FILE).parent):
        folder.mkdir(parents=True, exist_ok=True)
    with open(log, "ab") as out:  # its own session: stop_server signals the whole process group
        _server_proc = subprocess.Popen(cmd, stdout=out, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                                        env=env, cwd=results_dir, start_new_session=True)
    record = {"uri": uri, "host": socket.gethostname(), "pid": _server_proc.pid,
              "pid_started": psutil.Process(_server_proc.pid).create_time(), "pid_ns": _pid_namespace(),
              "log": str(log)}
    (results_dir / SERVER_FILE).write_text(json.dumps(record))
    atexit.register(stop_server, results_dir)
    deadline = time.monotonic() + SERVER_START_TIMEOUT
    while time.monotonic() < deadline:
        if _server_proc.poll() is not None:
            break
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{port}/health", timeout=5) as resp:
                if resp.status == 200:
                    print(f"panel2patch: MLflow server {uri} (pid {_server_proc.pid}, log {log})", file=sys.stderr)
                    return uri
        except OSError:
            pass
        time.sleep(0.5)
    stop_server(results_dir)
    tail = "\n".join(log.read_text(errors="replace").splitlines()[-20:])
    raise RuntimeError(f"mlflow server did not answer on {uri} within {SERVER_START_TIMEOUT:.0f} s; "
                       f"{log} ends:\n{tail}")


def stop_server(results_dir: str | Path, grace: float = 15.0) -> bool:
    """Stop the server recorded in ``<results>/mlflow/server.json`` (TERM to its process group,
    KILL after ``grace`` s) and remove the file. Only a process of this host and pid namespace whose
    start time matches is signalled (a pid reused since is left alone). True if one was stopped."""
    record = Path(results_dir) / SERVER_FILE
    try:
        info = json.loads(record.read_text())
    except (OSError, ValueError):
        return False
    stopped = False
    if info.get("host") == socket.gethostname() and info.get("pid_ns") == _pid_namespace():
        pid = int(info["pid"])
        try:
            ours = abs(psutil.Process(pid).create_time() - float(info["pid_started"])) < 2.0
        except psutil.Error:
            ours = False
        # the leader, or its workers left behind by a leader killed with -9
        if ours or any("mlflow" in cmd for cmd in _server_group(pid)):
            for sig in (signal.SIGTERM, signal.SIGKILL):
                with contextlib.suppress(ProcessLookupError, PermissionError):
                    os.killpg(pid, sig)
                deadline = time.monotonic() + grace
                while _server_group(pid) and time.monotonic() < deadline:
                    time.sleep(0.2)
                if not _server_group(pid):
                    break
            stopped = True
    else:
        print(f"panel2patch: MLflow server {info.get('uri')} of host {info.get('host')} cannot be stopped from here",
              file=sys.stderr)
    record.unlink(missing_ok=True)
    return stopped


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


class RunArtifactDatasetSource(DatasetSource):
    """A dataset whose rows are an artifact of an MLflow run: ``runs:/<run id>/<path>``. The URI
    names the run, not a folder, so it resolves wherever the store and its artifacts are moved."""

    def __init__(self, uri: str):
        self.uri = uri

    @staticmethod
    def _get_source_type() -> str:
        return "mlflow_run_artifact"

    def load(self, dst_path: str | None = None) -> str:
        """Download the table; returns its local path."""
        from mlflow.artifacts import download_artifacts

        return download_artifacts(artifact_uri=self.uri, dst_path=dst_path)

    @staticmethod
    def _can_resolve(raw_source: Any) -> bool:
        return isinstance(raw_source, str) and raw_source.startswith("runs:/")

    @classmethod
    def _resolve(cls, raw_source: Any) -> "RunArtifactDatasetSource":
        return cls(raw_source)

    def to_dict(self) -> dict[str, Any]:
        return {"uri": self.uri}

    @classmethod
    def from_dict(cls, source_dict: dict[Any, Any]) -> "RunArtifactDatasetSource":
        return cls(source_dict["uri"])


register_dataset_source(RunArtifactDatasetSource)


DATASET_INSERT_TRIES = 3  # a dataset insert that lost a race with another job's is tried again


def log_dataset(df, name: str, context: str = "input", run_id: str | None = None):
    """Log ``df`` to the run (default: the active one) as the table artifact
    ``datasets/<name>.csv`` (``.parquet`` above :data:`CSV_MAX_ROWS` rows) and as a dataset
    input (``context``: input, output, training, workflow ...) whose source is that artifact.
    A second table of the same name on one run (a parent a rerun attached to) gets its digest
    in the file name. Returns the dataset (``.digest``, ``.source.uri``)."""
    import pandas as pd

    run_id = run_id or mlflow.active_run().info.run_id
    client = MlflowClient()
    df = pd.DataFrame(df).reset_index(drop=True)
    # mlflow's own digest fails on an empty frame with Arrow string columns (a shard whose
    # articles gave no figure): name the empty table by its columns instead
    digest = hashlib.sha256(",".join(map(str, df.columns)).encode()).hexdigest()[:8] if df.empty else compute_pandas_digest(df)
    ext = "csv" if len(df) <= CSV_MAX_ROWS else "parquet"
    taken = {Path(f.path).name for f in client.list_artifacts(run_id, "datasets")}
    file = f"{name}.{ext}" if f"{name}.{ext}" not in taken else f"{name}.{digest}.{ext}"
    with tempfile.TemporaryDirectory() as tmp:
        local = Path(tmp) / file
        if ext == "csv":
            df.to_csv(local, index=False)
        else:
            df.to_parquet(local, index=False)
        client.log_artifact(run_id, str(local), "datasets")
    with warnings.catch_warnings():  # the schema's hint that integer columns cannot hold missing values
        warnings.filterwarnings("ignore", message="Hint: Inferred schema contains integer")
        ds = mlflow.data.from_pandas(df, source=RunArtifactDatasetSource(f"runs:/{run_id}/datasets/{file}"), name=name,
                                     digest=digest)
    inputs = [DatasetInput(ds._to_mlflow_entity(), tags=[InputTag(key=MLFLOW_DATASET_CONTEXT, value=context)])]
    for attempt in range(DATASET_INSERT_TRIES):
        try:
            client.log_inputs(run_id, inputs)
            break
        except MlflowException as exc:
            # two jobs logging the same table at once (the ablation's evaluate jobs on the same
            # data): both found no dataset (experiment, name, digest), the other inserted it first;
            # tried again, mlflow finds that one and links it to this run
            if "UNIQUE constraint failed: datasets." not in str(exc) or attempt == DATASET_INSERT_TRIES - 1:
                raise
            time.sleep(0.2 * (attempt + 1))
    return ds


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


def _previous_parent(results_dir: Path, client: MlflowClient, experiment_id: str):
    """The parent run recorded in ``<results>/mlflow/parent_run.json`` if it is in this store and
    experiment (else None), and the results folder's run group (None when there is none yet)."""
    parent_file = results_dir / PARENT_FILE
    if not parent_file.exists():
        return None, None
    try:
        info = json.loads(parent_file.read_text())
        run = client.get_run(info["run_id"])
    except (ValueError, KeyError, MlflowException):
        return None, None
    if run.info.experiment_id != experiment_id:
        return None, None
    return run, run.data.tags.get(RUN_GROUP_TAG) or info.get("run_group")


def _invocation_record(n: int) -> dict:
    return {"invocation": n, "started": time.strftime("%Y-%m-%dT%H:%M:%S%z"), **_context_tags()}


def start_workflow_run(results_dir: str | Path, config: dict, manifest=None) -> str:
    """Open the invocation's parent run (left RUNNING) and record its id for the jobs: the
    results folder's last parent run again when it has ended and was made with this config (a
    partial rerun), else a new one in the same run group (see the module docstring)."""
    results_dir = Path(results_dir)
    tcfg = config.get("tracking", {}) or {}
    server = tcfg.get("server") or "none"
    if server == "auto":  # a server of this workflow run's own, stopped by end_workflow_run
        uri = start_server(results_dir, tcfg)
    else:
        uri = tracking_uri(results_dir, server if "://" in server else tcfg.get("uri"))
    exp = _experiment_id(results_dir, uri, tcfg.get("experiment", DEFAULT_EXPERIMENT), tcfg.get("artifact_location"),
                         local_artifacts=server == "auto")
    client = MlflowClient(uri)
    previous, group = _previous_parent(results_dir, client, exp)
    group = group or uuid.uuid4().hex
    params = flatten(config)
    if previous is not None and previous.info.status in ("FINISHED", "FAILED", "KILLED") and previous.data.params == params:
        run_id = previous.info.run_id
        invocation = int(previous.data.tags.get(INVOCATIONS_TAG, "1")) + 1
        client.update_run(run_id, status="RUNNING")
        for key, value in {**_context_tags(), INVOCATIONS_TAG: str(invocation), RUN_GROUP_TAG: group}.items():
            client.set_tag(run_id, key, value)
        client.log_dict(run_id, _invocation_record(invocation), f"invocations/{invocation}.json")
        if manifest is not None and len(manifest):
            units = {d.dataset.digest for d in previous.inputs.dataset_inputs if d.dataset.name == "input-units"}
            if compute_pandas_digest(manifest.reset_index(drop=True)) not in units:  # inputs changed since
                log_dataset(manifest, "input-units", "workflow", run_id)
        print(f"panel2patch: MLflow parent run {run_id} (invocation {invocation}; this config ran into {results_dir} before)",
              file=sys.stderr)
    else:
        invocation = 1
        with mlflow.start_run(experiment_id=exp, run_name=f"workflow {time.strftime('%Y-%m-%d %H:%M:%S')}",
                              tags={**_context_tags(), "panel2patch.level": "workflow", RUN_GROUP_TAG: group,
                                    INVOCATIONS_TAG: "1"}) as run:
            mlflow.log_params(params)
            mlflow.log_dict(config, "config.json")
            mlflow.log_dict(_invocation_record(1), "invocations/1.json")
            if manifest is not None and len(manifest):
                log_dataset(manifest, "input-units", "workflow")
            run_id = run.info.run_id
        # start_run's context closed the run; reopen it as RUNNING until onsuccess/onerror.
        client.update_run(run_id, status="RUNNING")
    try:
        for old_id, reason in recover_dead_runs(uri, exp, run_id, tcfg.get("stale_after_hours", DEFAULT_STALE_AFTER_HOURS)):
            print(f"panel2patch: MLflow run {old_id} was left RUNNING; marked KILLED ({reason})", file=sys.stderr)
    except Exception as exc:  # housekeeping: never stops the workflow
        print(f"panel2patch: could not check for runs left RUNNING by a crash: {exc!r}", file=sys.stderr)
    info = json.dumps({"run_id": run_id, "experiment_id": exp, "tracking_uri": uri, "run_group": group,
                       "invocation": invocation, "server": "auto" if server == "auto" else None})
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
    """Close the invocation's parent run, then stop the workflow's own server (if it started one)."""
    parent = Path(results_dir) / PARENT_FILE
    try:
        if parent.exists():
            info = json.loads(parent.read_text())
            MlflowClient(info["tracking_uri"]).set_terminated(info["run_id"], status=status)
    finally:
        stop_server(results_dir)


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

    def log_manifest(self, df, name: str, context: str = "input"):
        """Log a table (ids, paths, sha256 ...) as a dataset of the run that lists its rows: the
        table is the artifact ``datasets/<name>.csv`` the dataset's source points to
        (:func:`log_dataset`)."""
        return log_dataset(df, name, context, self.run_id)

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


def _parent_running(parent: dict, results_dir: Path) -> bool:
    uri = parent["tracking_uri"]
    if uri.startswith("sqlite:///") and not Path(uri.removeprefix("sqlite:///")).is_file():
        return False  # the store was moved: never create an empty one at the old path
    if parent.get("server") == "auto" and not (results_dir / SERVER_FILE).is_file():
        return False  # the workflow's own server has stopped (no waiting for it to answer)
    try:
        return MlflowClient(uri).get_run(parent["run_id"]).info.status == "RUNNING"
    except MlflowException:
        return False


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
    if parent and not _parent_running(parent, results_dir):
        parent = None  # left over from a finished invocation (or a moved store): this job was started by hand
    user_uri = os.environ.get("MLFLOW_TRACKING_URI") not in (None, "", _uri_set_here)
    if parent and not user_uri:
        uri, exp = parent["tracking_uri"], parent["experiment_id"]
        _use_uri(uri)
    else:
        uri = tracking_uri(results_dir, tracking_cfg.get("uri"))
        exp = _experiment_id(results_dir, uri, tracking_cfg.get("experiment", DEFAULT_EXPERIMENT),
                             tracking_cfg.get("artifact_location"))
    tags = {**_context_tags(), "panel2patch.level": "stage", "panel2patch.stage": stage}
    if parent:
        tags.update({RUN_GROUP_TAG: parent.get("run_group", parent["run_id"]), INVOCATION_TAG: str(parent.get("invocation", 1))})
    with mlflow.start_run(experiment_id=exp, run_name=f"{stage}:{name}", parent_run_id=parent and parent["run_id"],
                          nested=bool(parent), tags=tags) as run:
        mlflow.log_params(flatten(params))
        yield StageRun(run, results_dir)


def main(argv: list[str] | None = None) -> int:
    """``python -m panel2patch.tracking relocate RESULTS``: re-point a moved or copied results
    folder's embedded store at its own artifacts (the workflow does it by itself when it runs)."""
    import argparse

    ap = argparse.ArgumentParser(prog="python -m panel2patch.tracking", description=main.__doc__)
    ap.add_argument("command", choices=["relocate"], help="relocate: rewrite the store's artifact locations")
    ap.add_argument("results", type=Path, help="the results folder holding mlflow/mlflow.db and mlflow/artifacts")
    args = ap.parse_args(argv)
    if not _embedded_db(args.results).is_file():
        print(f"no MLflow store at {_embedded_db(args.results)}", file=sys.stderr)
        return 2
    moved = relocate_store(args.results)
    for old, new in moved.items():
        print(f"{old} -> {new}")
    if not moved:
        print("nothing to relocate: the store already points at its own artifacts")
    return 0


if __name__ == "__main__":
    sys.exit(main())
