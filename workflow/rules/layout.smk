# Layout: figure images -> panels (boxes, letters, kinds) and panel crops, per shard.


def layout_detector(wildcards):
    """The detector weights layout.method needs: none for splitter; layout.detector_weights, or
    else the train_detector rule's output (so the DAG trains it first)."""
    if config["layout"]["method"] == "splitter":
        return []
    return [config["layout"]["detector_weights"] or f"{RESULTS}/models/panel_detector.pt"]


rule layout:
    input:
        figures=f"{RESULTS}/{{shard}}/ingest/figures.parquet",
        images=f"{RESULTS}/{{shard}}/ingest/images",
        detector=layout_detector,
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
        tracking=JOB_TRACKING,
        results=RESULTS,
        ingest_dir=f"{RESULTS}/{{shard}}/ingest",
    threads: 1
    resources:
        mem_mb=3000,
        runtime=60,
    script:
        "../scripts/layout.py"
