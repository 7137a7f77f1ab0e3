# Visual markers: arrows, arrowheads, asterisks on image panels -> patches paired with the
# caption's marker phrases, per shard.


def marker_weights(wildcards):
    """The learned marker detector's weights when markers.detect uses them (Snakemake then trains
    them first if they are rule train_marker_detector's output)."""
    det = config["markers"].get("detect") or {}
    return [det["weights"]] if det.get("method", "heuristic") != "heuristic" and det.get("weights") else []


rule markers:
    input:
        figures=f"{RESULTS}/{{shard}}/ingest/figures.parquet",
        images=f"{RESULTS}/{{shard}}/ingest/images",
        panels=f"{RESULTS}/{{shard}}/layout/panels.parquet",
        phrases=f"{RESULTS}/{{shard}}/text/markers.parquet",
        weights=marker_weights,
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
        tracking=JOB_TRACKING,
        results=RESULTS,
    threads: 1
    resources:
        mem_mb=3000,
        runtime=60,
    script:
        "../scripts/markers.py"
