"""Snakemake adapter: merge the shards' ingest tables into a summary (see panel2patch.ingest.run)."""
import sys

sys.stderr = open(snakemake.log[0], "w", buffering=1)

from panel2patch.ingest.run import summarise

summarise(
    figures=list(snakemake.input.figures),
    articles=list(snakemake.input.articles),
    skips=list(snakemake.input.skips),
    summary_path=snakemake.output.summary,
    skips_path=snakemake.output.skips,
    results_dir=snakemake.params.tracking["results"],
    tracking_cfg=snakemake.params.tracking,
)
