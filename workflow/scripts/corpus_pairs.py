"""Snakemake adapter: candidate pairs of one shard (panel2patch.corpus.stage.run_pairs_shard)."""
import sys

sys.stderr = open(snakemake.log[0], "w", buffering=1)

from panel2patch.corpus.stage import run_pairs_shard

run_pairs_shard(
    figures=snakemake.input.figures,
    panels=snakemake.input.panels,
    panel_text=snakemake.input.panel_text,
    patches=snakemake.input.patches,
    out_path=snakemake.output.pairs,
    shard=snakemake.wildcards.shard,
    cfg=snakemake.params.cfg,
    results_dir=snakemake.params.tracking["results"],
    tracking_cfg=snakemake.params.tracking,
)
