"""Snakemake adapter: train the panel detector (see panel2patch.layout.detector.train_detector)."""
import logging
import sys

sys.stderr = open(snakemake.log[0], "w", buffering=1)
logging.basicConfig(stream=sys.stderr, level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")

from panel2patch.layout.detector import resolve_config, train_detector

cfg = {k: v for k, v in snakemake.params.cfg.items() if k != "runtime_min"}  # runtime_min is the rule's
cfg["threads"] = snakemake.threads
train_detector(
    resolve_config(cfg),
    snakemake.output.weights,
    progress=False,
    results_dir=snakemake.params.results,
    tracking_cfg=snakemake.params.tracking,
)
