"""Snakemake adapter: train a learned detector - rule train_detector: the panel detector
(panel2patch.layout.detector.train_detector); rule train_marker_detector: the marker detector
(panel2patch.markers.learned.train_marker_detector)."""
import logging
import sys

sys.stderr = open(snakemake.log[0], "w", buffering=1)
logging.basicConfig(stream=sys.stderr, level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")

if snakemake.rule == "train_marker_detector":
    from panel2patch.markers.learned import resolve_config
    from panel2patch.markers.learned import train_marker_detector as train
else:
    from panel2patch.layout.detector import resolve_config
    from panel2patch.layout.detector import train_detector as train

cfg = {k: v for k, v in snakemake.params.cfg.items() if k != "runtime_min"}  # runtime_min is the rule's
cfg["threads"] = snakemake.threads
train(
    resolve_config(cfg),
    snakemake.output.weights,
    progress=False,
    results_dir=snakemake.params.tracking["results"],
    tracking_cfg=snakemake.params.tracking,
)
