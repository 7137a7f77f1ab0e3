# Evaluation: every trained run (train.runs) on the benchmarks of evaluate.benchmarks, next to its
# untrained baseline (the run config's step-0 model) and trivial references; one MLflow run per job.
# By hand, on any open_clip model: panel2patch evaluate MODEL --out DIR (panel2patch.evaluate).

EVAL = config["evaluate"]


rule evaluate:
    input:
        model=f"{RESULTS}/train/{{run}}/final",
        result=f"{RESULTS}/train/{{run}}/result.json",  # the run config beside it gives the baseline
        sizes=f"{RESULTS}/corpus/shards/sizes.json",
        data=evaluation_data,
        code=code("evaluate.py"),
    output:
        json=report(
            f"{RESULTS}/evaluate/{{run}}/evaluation.json",
            caption="../report/evaluation.rst",
            category="Evaluation",
            labels={"run": "{run}", "file": "json"},
        ),
        table=report(
            f"{RESULTS}/evaluate/{{run}}/evaluation.md",
            caption="../report/evaluation.rst",
            category="Evaluation",
            labels={"run": "{run}", "file": "table"},
        ),
        baseline=directory(f"{RESULTS}/evaluate/{{run}}/untrained"),
    log:
        f"{RESULTS}/logs/evaluate/{{run}}.log",
    benchmark:
        f"{RESULTS}/benchmarks/evaluate/{{run}}.tsv"
    params:
        options={k: v for k, v in EVAL.items() if k not in ("mem_mb", "runtime_min")},
        tracking=TRACKING,
    threads: EVAL["threads"]
    resources:
        mem_mb=EVAL["mem_mb"],
        runtime=EVAL["runtime_min"],
    conda:
        ENV
    script:
        "../scripts/evaluate.py"
