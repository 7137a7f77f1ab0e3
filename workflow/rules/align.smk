# Alignment: panels (layout) <-> subcaptions (text) per shard.


rule align_panels:
    input:
        panels=f"{RESULTS}/{{shard}}/layout/panels.parquet",
        subcaptions=f"{RESULTS}/{{shard}}/text/subcaptions.parquet",
        code=code("align.py"),
    output:
        panel_text=f"{RESULTS}/{{shard}}/align/panel_text.parquet",
    log:
        f"{RESULTS}/logs/align/{{shard}}.log",
    benchmark:
        f"{RESULTS}/benchmarks/align/{{shard}}.tsv"
    params:
        tracking=TRACKING,
    threads: 1
    resources:
        mem_mb=2000,
        runtime=15,
    conda:
        ENV
    script:
        "../scripts/align.py"
