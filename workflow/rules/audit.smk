# Audit, last in the DAG: the run's lineage through MLflow (input articles, stage outputs, corpus
# shards and models re-hashed against their records; the config and git commit), the data stages
# of audit.reproduce rerun in a scratch folder, and config/claims/*.yaml next to the metrics.
# By hand, on any results folder: panel2patch audit results [--reproduce data]

AUDIT = config["audit"]


rule audit:
    input:
        done=audited_outputs(),  # every other final output: the audit reads their records
        claims=claims_files,
        code=code("audit.py"),
    output:
        json=f"{RESULTS}/audit/audit.json",
        md=report(f"{RESULTS}/audit/audit.md", caption="../report/audit.rst", category="Audit", labels={"file": "markdown"}),
        html=report(f"{RESULTS}/audit/audit.html", caption="../report/audit.rst", category="Audit", labels={"file": "html"}),
    log:
        f"{RESULTS}/logs/audit/audit.log",
    benchmark:
        f"{RESULTS}/benchmarks/audit/audit.tsv"
    params:
        reproduce=AUDIT["reproduce"],
        tolerance=AUDIT["tolerance"],
        claims=AUDIT["claims"],
        fail=AUDIT["fail"],
        config=config,  # compared key by key with the parent run's recorded config
        tracking=TRACKING,
    threads: 1
    resources:
        mem_mb=2000,
        runtime=30,
    conda:
        ENV
    script:
        "../scripts/audit.py"
