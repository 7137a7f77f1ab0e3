"""Start the trainer's ranks for a workflow job (rule ``train``, workflow/scripts/train.py).

One rule serves a laptop and a Slurm cluster; the launcher picks how the ranks start::

    srun     (inside a Slurm job)  srun --ntasks N --nodes M --cpus-per-task C [--gpus-per-task G]
                                        --kill-on-bad-exit=1 python -m panel2patch.train.main ...
             ranks map SLURM_PROCID/SLURM_NTASKS/SLURM_LOCALID themselves (distributed.py); no
             hostfile, no SSH.  The rule's ``mpi`` resource keeps the Slurm executor from wrapping
             the job in ``srun -n1``, so this srun is the job step.
    torchrun (no Slurm, N > 1)     python -m torch.distributed.run --standalone --nproc_per_node N -m ...
    single   (no Slurm, N = 1)     python -m panel2patch.train.main ...

``auto`` (the default) is srun when ``SLURM_JOB_ID`` is set (the job runs in an allocation:
``--profile slurm``), else torchrun for N > 1, else single.  N, M, C, G come from the rule's
resources (``tasks``, ``nodes``, ``cpus_per_task``, ``gpus_per_task``), so a profile's
``set-resources`` resizes a run without touching the config.

:func:`prepare_output` makes resuming safe: a job rerun on the same inputs and run config (a
killed or timed-out Slurm job) resumes from ``<out>/checkpoints``; a job whose inputs or run
config changed starts afresh (the old checkpoints would be resumed otherwise).
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import subprocess
import sys
from collections.abc import Mapping, Sequence
from pathlib import Path

LAUNCHERS = ("auto", "srun", "torchrun", "single")
TRAINER = ["-m", "panel2patch.train.main"]


def resolve_launcher(launcher: str, tasks: int, env: Mapping[str, str] | None = None) -> str:
    env = os.environ if env is None else env
    if launcher not in LAUNCHERS:
        raise ValueError(f"launcher {launcher!r}: expected one of {LAUNCHERS}")
    if launcher == "auto":
        return "srun" if env.get("SLURM_JOB_ID") else "torchrun" if tasks > 1 else "single"
    if launcher == "single" and tasks != 1:
        raise ValueError(f"launcher single runs 1 process, not tasks={tasks}")
    return launcher


def launch_command(launcher: str, trainer_args: Sequence[str], tasks: int = 1, nodes: int = 1,
                   cpus_per_task: int = 1, gpus_per_task: int = 0, python: str = sys.executable,
                   env: Mapping[str, str] | None = None) -> list[str]:
    """The argv that starts ``tasks`` ranks of ``python -m panel2patch.train.main trainer_args``."""
    how = resolve_launcher(launcher, tasks, env)
    if how == "srun":
        cmd = ["srun", f"--ntasks={tasks}", f"--nodes={nodes}", f"--cpus-per-task={cpus_per_task}",
               "--kill-on-bad-exit=1", "--label"]  # --label: "0: ..." per rank in the log
        if gpus_per_task:
            cmd.append(f"--gpus-per-task={gpus_per_task}")
        return [*cmd, python, *TRAINER, *trainer_args]
    if nodes != 1:
        raise ValueError(f"{how} starts ranks on this machine only, not on nodes={nodes} (use Slurm)")
    if how == "torchrun":
        return [python, "-m", "torch.distributed.run", "--standalone", f"--nproc_per_node={tasks}",
                *TRAINER, *trainer_args]
    return [python, *TRAINER, *trainer_args]


def job_key(sizes_json: str | Path, run_config: str | Path, overrides: Sequence[str], tasks: int) -> dict:
    """What a resumable run must share with the run whose checkpoints it finds: the corpus
    (sizes.json's sha256 and each listed shard's size and mtime: a stat, not a hash of the
    shards), the run config, the overrides and the world size."""
    def sha(p):
        return hashlib.sha256(Path(p).read_bytes()).hexdigest()

    shards = {}
    for name in sorted(json.loads(Path(sizes_json).read_text())):
        st = (Path(sizes_json).parent / name).stat()
        shards[name] = [st.st_size, st.st_mtime_ns]
    return {"sizes_json_sha256": sha(sizes_json), "shards": shards, "run_config_sha256": sha(run_config),
            "overrides": list(overrides), "world_size": int(tasks)}


def prepare_output(out_dir: str | Path, key: dict) -> bool:
    """Keep ``out_dir``'s checkpoints when its ``job_key.json`` equals ``key`` (returns True: the
    trainer resumes), else empty ``out_dir`` and record ``key`` (False: a fresh run)."""
    out_dir = Path(out_dir)
    stamp = out_dir / "job_key.json"
    same = stamp.is_file() and json.loads(stamp.read_text()) == key
    if not same:
        for p in ("checkpoints", "metrics.jsonl", "result.json", "final"):
            q = out_dir / p
            shutil.rmtree(q, ignore_errors=True) if q.is_dir() else q.unlink(missing_ok=True)
        out_dir.mkdir(parents=True, exist_ok=True)
        stamp.write_text(json.dumps(key, indent=1))
    return same and (out_dir / "checkpoints" / "latest").is_file()


def run(cmd: Sequence[str], log, threads: int = 1) -> None:
    """Run ``cmd`` with its stdout and stderr into ``log`` (an open file); raise on failure."""
    env = {**os.environ, "OMP_NUM_THREADS": str(threads), "PYTHONUNBUFFERED": "1"}
    print("$ " + " ".join(cmd), file=log, flush=True)
    res = subprocess.run(list(cmd), stdout=log, stderr=subprocess.STDOUT, env=env)
    if res.returncode != 0:
        raise SystemExit(f"training failed (exit {res.returncode}): {' '.join(cmd)}")
