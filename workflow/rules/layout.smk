# Layout: figure images -> panels (boxes, letters, kinds) and panel crops, per shard.


rule layout:
    input:
        figures=f"{RESULTS}/{{shard}}/ingest/figures.parquet",
        images=f"{RESULTS}/{{shard}}/ingest/images",
    output:
        panels=f"{RESULTS}/{{shard}}/layout/panels.parquet",
        skips=f"{RESULTS}/{{shard}}/layout/skips.parquet",
        crops=directory(f"{RESULTS}/{{shard}}/layout/crops"),
    log:
        f"{RESULTS}/logs/layout/{{shard}}.log",
    benchmark:
        f"{RESULTS}/benchmarks/layout/{{shard}}.tsv"
    params:
        cfg=config["layout"],
        tracking=config["tracking"],
        results=RESULTS,
        ingest_dir=f"{RESULTS}/{{shard}}/ingest",
    threads: 1
    resources:
        mem_mb=3000,
        runtime=60,
    script:
        "../scripts/layout.py"
