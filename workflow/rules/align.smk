# Alignment: panels (layout) <-> subcaptions (text) per shard.


rule align_panels:
    input:
        panels=f"{RESULTS}/{{shard}}/layout/panels.parquet",
        subcaptions=f"{RESULTS}/{{shard}}/text/subcaptions.parquet",
    output:
        panel_text=f"{RESULTS}/{{shard}}/align/panel_text.parquet",
    log:
        f"{RESULTS}/logs/align/{{shard}}.log",
    benchmark:
        f"{RESULTS}/benchmarks/align/{{shard}}.tsv"
    params:
        tracking=JOB_TRACKING,
        results=RESULTS,
    threads: 1
    resources:
        mem_mb=2000,
        runtime=15,
    script:
        "../scripts/align.py"
