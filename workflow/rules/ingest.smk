# Ingest: articles (JATS, PMC OA packages, PDFs) -> figures, articles and skips tables per shard.


rule ingest:
    input:
        shard_paths,
    output:
        figures=f"{RESULTS}/{{shard}}/ingest/figures.parquet",
        articles=f"{RESULTS}/{{shard}}/ingest/articles.parquet",
        skips=f"{RESULTS}/{{shard}}/ingest/skips.parquet",
        images=directory(f"{RESULTS}/{{shard}}/ingest/images"),
    log:
        f"{RESULTS}/logs/ingest/{{shard}}.log",
    benchmark:
        f"{RESULTS}/benchmarks/ingest/{{shard}}.tsv"
    params:
        units=shard_units,
        cfg=config["ingest"],
        tracking=JOB_TRACKING,
        results=RESULTS,
    threads: 1
    resources:
        mem_mb=4000,
        runtime=60,
    script:
        "../scripts/ingest.py"


rule ingest_summary:
    input:
        figures=expand(f"{RESULTS}/{{shard}}/ingest/figures.parquet", shard=SHARDS),
        articles=expand(f"{RESULTS}/{{shard}}/ingest/articles.parquet", shard=SHARDS),
        skips=expand(f"{RESULTS}/{{shard}}/ingest/skips.parquet", shard=SHARDS),
    output:
        summary=f"{RESULTS}/ingest/summary.json",
        skips=f"{RESULTS}/ingest/skips.tsv",
    log:
        f"{RESULTS}/logs/ingest/summary.log",
    benchmark:
        f"{RESULTS}/benchmarks/ingest/summary.tsv"
    params:
        tracking=JOB_TRACKING,
        results=RESULTS,
    threads: 1
    resources:
        mem_mb=2000,
        runtime=10,
    script:
        "../scripts/ingest_summary.py"
