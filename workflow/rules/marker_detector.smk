# Learned marker detector: a Faster R-CNN trained from scratch on real image panels with drawn
# arrows, arrowheads, asterisks and chevrons (src/panel2patch/markers/learned.py). On demand:
# `snakemake --cores all train_marker_detector`. The weights are a versioned artifact: the .pt
# plus a .json sidecar (config, seed, sha256, torch/torchvision versions), both logged to MLflow.
# Use them with markers.detect: {method: both, weights: results/models/marker_detector.pt}.


def marker_detector_sources(wildcards):
    """Real source folders named in the config, so a change to them retrains the model."""
    src = config["markers"]["detector"].get("sources", {})
    return [p for p in [src.get("vqa_rad"), src.get("exsclaim")] if p]


rule train_marker_detector:
    input:
        marker_detector_sources,
    output:
        weights=f"{RESULTS}/models/marker_detector.pt",
        sidecar=f"{RESULTS}/models/marker_detector.json",
    log:
        f"{RESULTS}/logs/markers/train_marker_detector.log",
    benchmark:
        f"{RESULTS}/benchmarks/markers/train_marker_detector.tsv"
    params:
        cfg=config["markers"]["detector"],
        tracking=config["tracking"],
        results=RESULTS,
    threads: config["markers"]["detector"].get("threads", 1)
    resources:
        mem_mb=6000,
        runtime=config["markers"]["detector"].get("runtime_min", 30),
    script:
        "../scripts/train_detector.py"
