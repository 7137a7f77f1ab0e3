"""``panel2patch recover [SNAKEMAKE ARGS...]``: continue a workflow run that was killed.

A killed Snakemake (kill -9, power loss, OOM killer, a closed terminal) leaves its lock in
``.snakemake/locks`` (the next run stops with a LockException) and marks the outputs of the jobs
it was running incomplete (after ``--unlock``, an IncompleteFilesException). This command checks
that nothing still runs the workflow in that directory, then runs ``snakemake --unlock ARGS`` and
``snakemake --rerun-incomplete ARGS`` with the arguments of the crashed run. The new run marks the
dead run's MLflow parent (and jobs) KILLED (panel2patch.tracking.recover_dead_runs).

"Nothing still runs" means, on this host: no live process whose command line is Snakemake with
its working directory in the workflow directory (a main Snakemake or a job of it; processes of
other users, whose working directory cannot be read, are not seen); and in MLflow: the workflow
parent run recorded in ``results/mlflow/parent_run.json`` is not RUNNING for a process that is
alive or that cannot be checked from here (started on another host), and none of its jobs that
ran as Slurm jobs (tag ``slurm.job_id``, still RUNNING) is listed by ``squeue``: Slurm jobs outlive
a killed Snakemake. ``--assume-dead`` skips the MLflow and Slurm checks (e.g. a run started on
another login node that is known to be dead).
"""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

import psutil


def add_arguments(parser) -> None:
    parser.usage = "panel2patch recover [--assume-dead] [SNAKEMAKE ARGS...]"
    parser.description = __doc__.split("\n\n")[0].split(": ", 1)[1]
    parser.add_argument("--assume-dead", action="store_true",
                        help="do not ask MLflow whether the recorded workflow run is alive (processes on this host are still checked)")
    parser.set_defaults(_passthrough=True)


def _workdir(args: list[str]) -> Path:
    """The workflow directory: Snakemake's --directory/-d if given, else the current one."""
    workdir = None
    for i, a in enumerate(args):
        if a in ("-d", "--directory") and i + 1 < len(args):
            workdir = args[i + 1]
        elif a.startswith("--directory="):
            workdir = a.split("=", 1)[1]
    return Path(workdir or ".").resolve()


def _is_snakemake(cmdline: list[str]) -> bool:
    head = cmdline[:3]
    return any(Path(a).name == "snakemake" for a in head) or any(
        a == "-m" and b == "snakemake" for a, b in zip(head, head[1:]))


def live_snakemakes(workdir: Path) -> list[str]:
    """``pid: command line`` of each live Snakemake process working in ``workdir`` (or below it)."""
    me = psutil.Process()
    mine = {me.pid, *(p.pid for p in me.parents())}
    found = []
    for proc in psutil.process_iter(["pid", "cmdline", "cwd", "status"]):
        info = proc.info
        if info["pid"] in mine or not info["cmdline"] or info["status"] == psutil.STATUS_ZOMBIE:
            continue
        if not _is_snakemake(info["cmdline"]) or not info["cwd"]:
            continue
        cwd = Path(info["cwd"])
        if cwd == workdir or workdir in cwd.parents:
            found.append(f"{info['pid']}: {' '.join(info['cmdline'])[:200]}")
    return found


def live_parent_run(workdir: Path) -> str | None:
    """Why the workflow run recorded under ``workdir/results`` may still be alive, or None."""
    from mlflow.tracking import MlflowClient

    from panel2patch import tracking

    parent_file = workdir / "results" / tracking.PARENT_FILE
    if not parent_file.exists():
        return None
    info = json.loads(parent_file.read_text())
    run = MlflowClient(info["tracking_uri"]).get_run(info["run_id"])
    if run.info.status == "RUNNING" and not tracking.dead_reason(run, stale_after_hours=None):
        return (f"MLflow run {info['run_id']} ({run.info.run_name}) is RUNNING, started by process "
                f"{run.data.tags.get(tracking.PID_TAG, '?')} on {run.data.tags.get('host', '?')}, which is alive or "
                "cannot be checked from this host")
    # Slurm jobs outlive a killed Snakemake: a job of the run still queued or running would write
    # the outputs that the rerun writes again
    client = MlflowClient(info["tracking_uri"])
    jobs = {r.data.tags["slurm.job_id"] for r in client.search_runs(
        [info["experiment_id"]], f"tags.`mlflow.parentRunId` = '{info['run_id']}' and attributes.status = 'RUNNING'",
        max_results=10000) if r.data.tags.get("slurm.job_id")}
    if not jobs:
        return None
    try:
        queue = subprocess.run(["squeue", "-h", "-o", "%i"], capture_output=True, text=True, timeout=60, check=True)
    except (OSError, subprocess.SubprocessError) as exc:
        return f"Slurm jobs {', '.join(sorted(jobs))} of the run may still run and squeue cannot tell ({exc})"
    if live := jobs & set(queue.stdout.split()):
        return f"Slurm jobs {', '.join(sorted(live))} of the run are still queued or running (squeue)"
    return None


def _snakemake() -> str:
    here = Path(sys.executable).with_name("snakemake")
    return str(here) if here.exists() else (shutil.which("snakemake") or "snakemake")


def main(args) -> int:
    extra = list(getattr(args, "extra", []) or [])
    workdir = _workdir(extra)
    if live := live_snakemakes(workdir):
        print(f"panel2patch recover: Snakemake is still running in {workdir}; not unlocking:\n  " + "\n  ".join(live),
              file=sys.stderr)
        return 1
    if not args.assume_dead:
        try:
            reason = live_parent_run(workdir)
        except Exception as exc:  # an unreadable store must not hide a live run: say so and stop
            reason = f"could not read the recorded workflow run from MLflow ({exc!r})"
        if reason:
            print(f"panel2patch recover: {reason}; not unlocking (--assume-dead if you know it is dead)",
                  file=sys.stderr)
            return 1
    snakemake = _snakemake()
    unlock = subprocess.run([snakemake, "--unlock", *extra])
    if unlock.returncode != 0:
        return unlock.returncode
    rerun = [] if "--rerun-incomplete" in extra or "--ri" in extra else ["--rerun-incomplete"]
    return subprocess.run([snakemake, *rerun, *extra]).returncode
