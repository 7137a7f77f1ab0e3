"""Snakemake adapter: lay out one shard's figures (see panel2patch.layout.stage.run_layout_shard)."""
import os
import sys

sys.stderr = open(snakemake.log[0], "w", buffering=1)

# One core per job: keep OpenCV / BLAS / tesseract from starting thread pools.
for var in ("OMP_THREAD_LIMIT", "OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS"):
    os.environ.setdefault(var, str(snakemake.threads))

import cv2  # noqa: E402

cv2.setNumThreads(snakemake.threads)

from panel2patch.layout.stage import run_layout_shard  # noqa: E402

run_layout_shard(
    figures_parquet=snakemake.input.figures,
    ingest_dir=snakemake.params.ingest_dir,
    out_dir=snakemake.output.panels.rsplit("/", 1)[0],
    shard=snakemake.wildcards.shard,
    results_dir=snakemake.params.tracking["results"],
    tracking_cfg=snakemake.params.tracking,
    cfg={**snakemake.params.cfg, "detector_weights": snakemake.input.detector[0] if snakemake.input.detector else None},
)
