# Visual markers: arrows, arrowheads, asterisks on image panels -> patches paired with the
# caption's marker phrases, per shard.




rule markers:
    input:
        figures=f"{RESULTS}/{{shard}}/ingest/figures.parquet",
        images=f"{RESULTS}/{{shard}}/ingest/images",
        panels=f"{RESULTS}/{{shard}}/layout/panels.parquet",
        phrases=f"{RESULTS}/{{shard}}/text/markers.parquet",
        weights=marker_weights,
        code=code("markers.py"),
    output:
        markers=f"{RESULTS}/{{shard}}/markers/markers.parquet",
        patches=f"{RESULTS}/{{shard}}/markers/patches.parquet",
        skips=f"{RESULTS}/{{shard}}/markers/skips.parquet",
        crops=directory(f"{RESULTS}/{{shard}}/markers/crops"),
    log:
        f"{RESULTS}/logs/markers/{{shard}}.log",
    benchmark:
        f"{RESULTS}/benchmarks/markers/{{shard}}.tsv"
    params:
        cfg=config["markers"],
        tracking=TRACKING,
    threads: 1
    resources:
        mem_mb=3000,
        runtime=60,
    conda:
        ENV
    script:
        "../scripts/markers.py"
