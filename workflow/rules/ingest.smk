# Ingest: articles (JATS, PMC OA packages, PDFs) -> figures, articles and skips tables per shard.


rule ingest:
    input:
        units=shard_manifest,
        code=code("ingest.py"),
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
        cfg=config["ingest"],
        tracking=TRACKING,
    threads: 1
    resources:
        mem_mb=4000,
        runtime=60,
    conda:
        ENV
    script:
        "../scripts/ingest.py"


rule ingest_summary:
    input:
        figures=expand(f"{RESULTS}/{{shard}}/ingest/figures.parquet", shard=SHARDS),
        articles=expand(f"{RESULTS}/{{shard}}/ingest/articles.parquet", shard=SHARDS),
        skips=expand(f"{RESULTS}/{{shard}}/ingest/skips.parquet", shard=SHARDS),
        code=code("ingest_summary.py"),
    output:
        summary=report(f"{RESULTS}/ingest/summary.json", caption="../report/ingest_summary.rst", category="Ingest"),
        skips=report(f"{RESULTS}/ingest/skips.tsv", caption="../report/ingest_skips.rst", category="Ingest"),
    log:
        f"{RESULTS}/logs/ingest/summary.log",
    benchmark:
        f"{RESULTS}/benchmarks/ingest/summary.tsv"
    params:
        tracking=TRACKING,
    threads: 1
    resources:
        mem_mb=2000,
        runtime=10,
    conda:
        ENV
    script:
        "../scripts/ingest_summary.py"
