# Ablation (on demand: `snakemake --cores all ablation`; not in the default target): each arm of
# config `ablation.arms` is a training choice (levels, loss terms) on top of the run config
# `ablation.base`; every arm x seed is a train run `ablation-<arm>-s<seed>` (rule train, its run
# config written by ablation_run_config into results/ablation/runs/) on the same corpus shards,
# then an evaluate run (rule evaluate) on the same test items. The ablation rule compares every arm
# with `ablation.baseline`: difference and paired bootstrap interval per metric
# (panel2patch.evaluate.ablation; by hand: panel2patch ablation --arm NAME=EVAL.json ...).


rule ablation_run_config:
    input:
        base=ablation_base_config,
        code=code("ablation_run_config.py"),
    output:
        run_config=f"{RESULTS}/ablation/runs/{{run}}.yaml",
    log:
        f"{RESULTS}/logs/ablation_run_config/{{run}}.log",
    benchmark:
        f"{RESULTS}/benchmarks/ablation_run_config/{{run}}.tsv"
    params:
        overrides=ablation_overrides,
    wildcard_constraints:
        run=r"ablation-[A-Za-z0-9_.-]+",
    threads: 1
    resources:
        mem_mb=500,
        runtime=5,
    conda:
        ENV
    script:
        "../scripts/ablation_run_config.py"


rule ablation:
    input:
        evaluations=ablation_evaluation_files(),
        trained=ablation_train_result_files(),  # each run's result.json: its optimizer steps
        code=code("ablation.py"),
    output:
        json=report(
            f"{RESULTS}/ablation/ablation.json",
            caption="../report/ablation.rst",
            category="Ablation",
            labels={"file": "json"},
        ),
        table=report(
            f"{RESULTS}/ablation/ablation.md",
            caption="../report/ablation.rst",
            category="Ablation",
            labels={"file": "table"},
        ),
        html=report(
            f"{RESULTS}/ablation/ablation.html",
            caption="../report/ablation.rst",
            category="Ablation",
            labels={"file": "chart"},
        ),
    log:
        f"{RESULTS}/logs/ablation/all.log",
    benchmark:
        f"{RESULTS}/benchmarks/ablation/all.tsv"
    params:
        arms=ablation_evaluations(),
        runs=ablation_arm_runs(),
        train_results=ablation_train_results(),
        baseline=ABLATION["baseline"],
        options={k: ABLATION[k] for k in ("resamples", "ci", "seed")},
        config=ABLATION,
        tracking=TRACKING,
    threads: 1
    resources:
        mem_mb=2000,
        runtime=30,
    conda:
        ENV
    script:
        "../scripts/ablation.py"
