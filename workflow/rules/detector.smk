# Learned panel detector: a Faster R-CNN trained from scratch on synthetic compound figures
# (src/panel2patch/layout/detector.py). The weights are a versioned artifact: the .pt plus a .json
# sidecar (config, seed, sha256, torch/torchvision versions), both also logged to MLflow.


def detector_sources(wildcards):
    """Real source folders/files named in the config, so a change to them retrains the model."""
    src = config["detector"]["sources"]
    return [p for p in [src.get("vqa_rad"), src.get("exsclaim"), *(src.get("panel_gt") or [])] if p]


rule train_detector:
    input:
        detector_sources,
    output:
        weights=f"{RESULTS}/models/panel_detector.pt",
        sidecar=f"{RESULTS}/models/panel_detector.json",
    log:
        f"{RESULTS}/logs/detector/train_detector.log",
    benchmark:
        f"{RESULTS}/benchmarks/detector/train_detector.tsv"
    params:
        cfg=config["detector"],
        tracking=JOB_TRACKING,
        results=RESULTS,
    threads: config["detector"]["threads"]
    resources:
        mem_mb=6000,
        runtime=config["detector"]["runtime_min"],
    script:
        "../scripts/train_detector.py"
