# Learned panel detector: a Faster R-CNN trained from scratch on synthetic compound figures
# (src/panel2patch/layout/detector.py). The weights are a versioned artifact: the .pt plus a .json
# sidecar (config, seed, sha256, torch/torchvision versions), both also logged to MLflow.


rule train_detector:
    input:
        detector_sources,
        code=code("train_detector.py"),
    output:
        weights=f"{RESULTS}/models/panel_detector.pt",
        sidecar=f"{RESULTS}/models/panel_detector.json",
    log:
        f"{RESULTS}/logs/detector/train_detector.log",
    benchmark:
        f"{RESULTS}/benchmarks/detector/train_detector.tsv"
    params:
        cfg=config["detector"],
        tracking=TRACKING,
    threads: config["detector"]["threads"]
    resources:
        mem_mb=6000,
        runtime=config["detector"]["runtime_min"],
    conda:
        ENV
    script:
        "../scripts/train_detector.py"
