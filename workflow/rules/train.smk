# Pretraining: the corpus shards -> one granularity-aware model per run config in config/train/.
# A job is one run with `tasks` ranks (world size): started by srun inside a Slurm job
# (--profile slurm), by torchrun or as one process on this machine (panel2patch.train.launch).
# Resize a run from a profile without touching the config, e.g. in slurm/config.v8+.yaml:
#   set-resources: {train: {tasks: 8, nodes: 2, gpus_per_task: 1, gpu: 8, cpus_per_task: 8, mem_mb: 64000}}
# (gpu is the job's total, tasks x gpus_per_task; the ranks read tasks, nodes, cpus_per_task and
# gpus_per_task from the resources)
# A rerun on the same inputs and run config (a killed Slurm job) resumes from its last checkpoint.

TRAIN = config["train"]


wildcard_constraints:
    run=r"[A-Za-z0-9_.-]+",


rule train:
    input:
        sizes=f"{RESULTS}/corpus/shards/sizes.json",
        run_config=run_config,  # config/train/<run>.yaml; an ablation arm's from ablation_run_config
        # ranks run train.main; pyfunc_model.py is logged as the MLflow model's code
        code=code("train.py", "panel2patch.train.main", "panel2patch.model.pyfunc_model"),
    output:
        model=directory(f"{RESULTS}/train/{{run}}/final"),
        result=report(
            f"{RESULTS}/train/{{run}}/result.json",
            caption="../report/train_result.rst",
            category="Training",
            labels={"run": "{run}"},
        ),
    log:
        f"{RESULTS}/logs/train/{{run}}.log",
    benchmark:
        f"{RESULTS}/benchmarks/train/{{run}}.tsv"
    params:
        overrides=train_overrides,  # train.set (an ablation arm's run config holds it already)
        deepspeed=TRAIN["deepspeed"],
        launcher=TRAIN["launcher"],
        tracking=TRACKING,
        registered_model_name=config["tracking"]["registered_model_name"],
    threads: TRAIN["tasks"] * TRAIN["cpus_per_task"]
    resources:
        mem_mb=TRAIN["mem_mb"],
        runtime=TRAIN["runtime_min"],
        nodes=TRAIN["nodes"],
        tasks=TRAIN["tasks"],
        cpus_per_task=TRAIN["cpus_per_task"],
        gpus_per_task=TRAIN["gpus_per_task"],
        gpu=TRAIN["tasks"] * TRAIN["gpus_per_task"],
        tasks_per_gpu=1,
        # with an mpi resource the Slurm executor runs the job without its `srun -n1` wrapper, so
        # the script's own srun is the job step that starts the ranks; the executor refuses
        # mpi="srun" with 1 task, where "" (the key alone) has the same effect
        mpi="srun" if TRAIN["tasks"] > 1 else "",
    conda:
        ENV
    script:
        "../scripts/train.py"
