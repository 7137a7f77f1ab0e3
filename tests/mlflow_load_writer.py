"""One writer of the MLflow load test (tests/test_mlflow_load.py), run as one task of a Slurm array.

    python mlflow_load_writer.py RESULTS READY_DIR N_JOBS N_METRICS N_STEPS

Imports MLflow, then waits until all N_JOBS writers have imported (a file each in READY_DIR), so
that they log at the same moment. Then opens its nested run under the workflow's parent run (found
as a real job finds it: $P2P_MLFLOW_PARENT) with panel2patch.tracking.stage_run, logs N_METRICS
metrics at N_STEPS steps one call each (value = index * 1000 + step * 100 + metric), its params,
and the artifact ``load.json``. Prints one JSON line: index, tracking URI, logging start and end.
"""

import json
import os
import sys
import time
from pathlib import Path

import mlflow

from panel2patch import tracking

BARRIER_TIMEOUT = 600  # s; past it the writer logs anyway (the test reports the overlap it got)


def main(argv: list[str]) -> int:
    results, ready = Path(argv[0]), Path(argv[1])
    n_jobs, n_metrics, n_steps = (int(a) for a in argv[2:5])
    index = int(os.environ["SLURM_ARRAY_TASK_ID"])
    (ready / str(index)).touch()
    deadline = time.time() + BARRIER_TIMEOUT
    while sum(1 for _ in ready.iterdir()) < n_jobs and time.time() < deadline:
        time.sleep(0.1)
    start = time.time()
    with tracking.stage_run("load", f"job-{index:02d}", {"index": index, "metrics": n_metrics, "steps": n_steps},
                            results):
        for step in range(n_steps):
            for k in range(n_metrics):
                mlflow.log_metric(f"m{k:02d}", index * 1000 + step * 100 + k, step=step)
        mlflow.log_dict({"index": index, "host": os.uname().nodename}, "load.json")
    print(json.dumps({"index": index, "uri": mlflow.get_tracking_uri(), "start": start, "end": time.time()}))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
