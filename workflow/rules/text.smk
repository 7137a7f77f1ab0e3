# Caption understanding: captions -> per-panel subcaptions and marker phrases, per shard.


rule text:
    input:
        figures=f"{RESULTS}/{{shard}}/ingest/figures.parquet",
        code=code("text.py"),
    output:
        subcaptions=f"{RESULTS}/{{shard}}/text/subcaptions.parquet",
        markers=f"{RESULTS}/{{shard}}/text/markers.parquet",
    log:
        f"{RESULTS}/logs/text/{{shard}}.log",
    benchmark:
        f"{RESULTS}/benchmarks/text/{{shard}}.tsv"
    params:
        tracking=TRACKING,
    threads: 1
    resources:
        mem_mb=2000,
        runtime=30,
    conda:
        ENV
    script:
        "../scripts/text.py"
