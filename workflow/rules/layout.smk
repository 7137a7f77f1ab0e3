# Layout: figure images -> panels (boxes, letters, kinds) and panel crops, per shard.




rule layout:
    input:
        figures=f"{RESULTS}/{{shard}}/ingest/figures.parquet",
        images=f"{RESULTS}/{{shard}}/ingest/images",
        detector=layout_detector,
        code=code("layout.py"),
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
        tracking=TRACKING,
        ingest_dir=lambda wildcards, input: os.path.dirname(input.figures),
    threads: 1
    resources:
        mem_mb=3000,
        runtime=60,
    conda:
        ENV
    script:
        "../scripts/layout.py"
