# Learned marker detector: a Faster R-CNN trained from scratch on real image panels with drawn
# arrows, arrowheads, asterisks and chevrons (src/panel2patch/markers/learned.py). On demand:
# `snakemake --cores all train_marker_detector`. The weights are a versioned artifact: the .pt
# plus a .json sidecar (config, seed, sha256, torch/torchvision versions), both logged to MLflow.
# Use them with markers.detect: {method: both, weights: results/models/marker_detector.pt}.


rule train_marker_detector:
    input:
        marker_detector_sources,
        code=code("train_detector.py"),
    output:
        weights=f"{RESULTS}/models/marker_detector.pt",
        sidecar=f"{RESULTS}/models/marker_detector.json",
    log:
        f"{RESULTS}/logs/markers/train_marker_detector.log",
    benchmark:
        f"{RESULTS}/benchmarks/markers/train_marker_detector.tsv"
    params:
        cfg=config["markers"]["detector"],
        tracking=TRACKING,
    threads: config["markers"]["detector"].get("threads", 1)
    resources:
        mem_mb=6000,
        runtime=config["markers"]["detector"].get("runtime_min", 30),
    conda:
        ENV
    script:
        "../scripts/train_detector.py"


# Marker verifier: a small CNN that judges each glyph-like component of an image panel (marker
# type or none, and its tip); src/panel2patch/markers/verify.py. The default marker method
# (`verified`) uses the weights shipped in the package; this rule rebuilds them:
# `snakemake --cores all train_marker_verifier --config markers='{verifier: {n_panels: 3000, epochs: 10,
#  sources: {vqa_rad: ../shared/data/vqa-rad, hand_labelled: ../shared/data/panels-gt/hand-labelled-dev}}}'`


rule train_marker_verifier:
    input:
        marker_verifier_sources,
        code=code("train_marker_verifier.py"),
    output:
        weights=f"{RESULTS}/models/marker_verifier.pt",
        sidecar=f"{RESULTS}/models/marker_verifier.json",
    log:
        f"{RESULTS}/logs/markers/train_marker_verifier.log",
    benchmark:
        f"{RESULTS}/benchmarks/markers/train_marker_verifier.tsv"
    params:
        cfg=config["markers"].get("verifier", {}),
    threads: config["markers"].get("verifier", {}).get("threads", 1)
    resources:
        mem_mb=6000,
        runtime=config["markers"].get("verifier", {}).get("runtime_min", 60),
    conda:
        ENV
    script:
        "../scripts/train_marker_verifier.py"
