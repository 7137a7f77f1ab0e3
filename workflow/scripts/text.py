"""Snakemake adapter: split one shard's captions (see panel2patch.text.stage.run_text_shard)."""
import sys

sys.stderr = open(snakemake.log[0], "w", buffering=1)

from panel2patch.text.stage import run_text_shard

run_text_shard(
    figures=snakemake.input.figures,
    out_dir=snakemake.output.subcaptions.rsplit("/", 1)[0],
    shard=snakemake.wildcards.shard,
    results_dir=snakemake.params.tracking["results"],
    tracking_cfg=snakemake.params.tracking,
)
