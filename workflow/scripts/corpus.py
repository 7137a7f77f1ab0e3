"""Snakemake adapter: all shards' pairs -> WebDataset shards, manifest, yield (panel2patch.corpus.stage)."""
import sys

sys.stderr = open(snakemake.log[0], "w", buffering=1)

from pathlib import Path

from panel2patch.corpus.stage import run_corpus

run_corpus(
    pair_tables=snakemake.input.pairs,
    out_dir=Path(snakemake.output.pairs).parent,
    cfg=snakemake.params.cfg,
    results_dir=snakemake.params.tracking["results"],
    tracking_cfg=snakemake.params.tracking,
    threads=snakemake.threads,
)
