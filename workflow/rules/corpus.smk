# Corpus: per shard, candidate pairs at three levels with their filters; then, once, near-duplicate
# removal, the split by article, WebDataset shards, manifest and supervision yield; then the QC report.


rule corpus_pairs:
    input:
        figures=f"{RESULTS}/{{shard}}/ingest/figures.parquet",
        images=f"{RESULTS}/{{shard}}/ingest/images",
        panels=f"{RESULTS}/{{shard}}/layout/panels.parquet",
        panel_text=f"{RESULTS}/{{shard}}/align/panel_text.parquet",
        patches=f"{RESULTS}/{{shard}}/markers/patches.parquet",
        licence_table=corpus_licence_table(),
        code=code("corpus_pairs.py"),
    output:
        pairs=f"{RESULTS}/{{shard}}/corpus/pairs.parquet",
    log:
        f"{RESULTS}/logs/corpus_pairs/{{shard}}.log",
    benchmark:
        f"{RESULTS}/benchmarks/corpus_pairs/{{shard}}.tsv"
    params:
        cfg=config["corpus"],
        tracking=TRACKING,
    threads: 1
    resources:
        mem_mb=2000,
        runtime=30,
    conda:
        ENV
    script:
        "../scripts/corpus_pairs.py"


rule corpus:
    input:
        pairs=expand(f"{RESULTS}/{{shard}}/corpus/pairs.parquet", shard=SHARDS),
        code=code("corpus.py"),
    output:
        pairs=f"{RESULTS}/corpus/pairs.parquet",
        sizes=f"{RESULTS}/corpus/shards/sizes.json",
        manifest=f"{RESULTS}/corpus/manifest.parquet",
        yield_=report(f"{RESULTS}/corpus/yield.json", caption="../report/corpus_yield.rst", category="Corpus"),
    log:
        f"{RESULTS}/logs/corpus/corpus.log",
    benchmark:
        f"{RESULTS}/benchmarks/corpus/corpus.tsv"
    params:
        cfg=config["corpus"],
        tracking=TRACKING,
    threads: 2  # shards written at once (same bytes for any value); raise it in a profile: set-threads: {corpus: 16}
    resources:
        mem_mb=4000,
        runtime=120,
    conda:
        ENV
    script:
        "../scripts/corpus.py"


rule corpus_report:
    input:
        pairs=f"{RESULTS}/corpus/pairs.parquet",
        yield_=f"{RESULTS}/corpus/yield.json",
        manifest=f"{RESULTS}/corpus/manifest.parquet",
        summary=f"{RESULTS}/ingest/summary.json",
        stages=expand(f"{RESULTS}/{{shard}}/markers/markers.parquet", shard=SHARDS),
        code=code("corpus_report.py"),
    output:
        report=directory(f"{RESULTS}/corpus/report"),
        standalone=report(
            f"{RESULTS}/corpus/report.html",
            caption="../report/corpus_report.rst",
            category="Corpus",
        ),
    log:
        f"{RESULTS}/logs/corpus/report.log",
    benchmark:
        f"{RESULTS}/benchmarks/corpus/report.tsv"
    params:
        cfg=config["corpus"],
        tracking=TRACKING,
        shards=list(SHARDS),
    threads: 1
    resources:
        mem_mb=3000,
        runtime=30,
    conda:
        ENV
    script:
        "../scripts/corpus_report.py"
