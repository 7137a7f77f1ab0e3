"""Snakemake adapter: rule train_marker_verifier -> panel2patch.markers.verify.train_from_config."""
import logging
import sys

sys.stderr = open(snakemake.log[0], "w", buffering=1)
logging.basicConfig(stream=sys.stderr, level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")

from panel2patch.markers.verify import train_from_config  # noqa: E402

train_from_config(snakemake.params.cfg, snakemake.output.weights, threads=snakemake.threads)
