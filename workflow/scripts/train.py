"""Snakemake adapter: start the trainer's ranks for one run config (see panel2patch.train.launch)."""
import sys

sys.stderr = open(snakemake.log[0], "w", buffering=1)

import json
from pathlib import Path

from panel2patch.train.launch import job_key, launch_command, prepare_output, run

p, res = snakemake.params, snakemake.resources
out_dir = Path(snakemake.output.result).parent
overrides = [*p.overrides, f"threads={res.cpus_per_task}", f"mlflow.results_dir={p.tracking['results']}",
             f"mlflow.uri={p.tracking['uri'] or 'null'}", f"mlflow.experiment={p.tracking['experiment']}",
             f"mlflow.name={snakemake.wildcards.run}", f"mlflow.registered_model_name={json.dumps(p.registered_model_name)}"]
resumed = prepare_output(out_dir, job_key(snakemake.input.sizes, snakemake.input.run_config, overrides, res.tasks))
print(f"{'resuming from' if resumed else 'fresh run in'} {out_dir}", file=sys.stderr, flush=True)
args = ["--config", snakemake.input.run_config, "--data", str(Path(snakemake.input.sizes).parent), "--output-dir", str(out_dir)]
args += [f"--set={o}" for o in overrides] + ([] if p.deepspeed else ["--no-deepspeed"])
cmd = launch_command(p.launcher, args, tasks=res.tasks, nodes=res.nodes, cpus_per_task=res.cpus_per_task,
                     gpus_per_task=res.gpus_per_task)
run(cmd, sys.stderr, threads=res.cpus_per_task)
