"""Snakemake adapter: markers and patches of one shard (panel2patch.markers.stage)."""
import sys

sys.stderr = open(snakemake.log[0], "w", buffering=1)

from panel2patch.markers.stage import run_markers_shard

run_markers_shard(
    figures=snakemake.input.figures,
    panels=snakemake.input.panels,
    phrases=snakemake.input.phrases,
    out_dir=snakemake.output.markers.rsplit("/", 1)[0],
    shard=snakemake.wildcards.shard,
    results_dir=snakemake.params.tracking["results"],
    tracking_cfg=snakemake.params.tracking,
    cfg=snakemake.params.cfg,
)
