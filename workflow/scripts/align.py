"""Snakemake adapter: pair one shard's panels with subcaptions (panel2patch.align.stage)."""
import sys

sys.stderr = open(snakemake.log[0], "w", buffering=1)

from panel2patch.align.stage import run_align_shard

run_align_shard(
    panels=snakemake.input.panels,
    subcaptions=snakemake.input.subcaptions,
    out_path=snakemake.output.panel_text,
    shard=snakemake.wildcards.shard,
    results_dir=snakemake.params.tracking["results"],
    tracking_cfg=snakemake.params.tracking,
)
