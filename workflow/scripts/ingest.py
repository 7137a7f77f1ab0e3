"""Snakemake adapter: ingest one shard (see panel2patch.ingest.run.run_shard)."""
import sys

sys.stderr = open(snakemake.log[0], "w", buffering=1)

from panel2patch.ingest.run import run_shard
from panel2patch.ingest.shards import read_manifest

run_shard(
    units=read_manifest(snakemake.input.units),
    out_dir=snakemake.output.figures.rsplit("/", 1)[0],
    shard=snakemake.wildcards.shard,
    cfg=snakemake.params.cfg,
    results_dir=snakemake.params.tracking["results"],
    tracking_cfg=snakemake.params.tracking,
)
