"""Snakemake adapter: the corpus QC report (panel2patch.corpus.stage.run_report)."""
import sys

sys.stderr = open(snakemake.log[0], "w", buffering=1)

from panel2patch.corpus.stage import run_report

run_report(
    results_dir=snakemake.params.tracking["results"],
    shards=snakemake.params.shards,
    out_dir=snakemake.output.report,
    n_figures=snakemake.params.cfg.get("report", {}).get("figures", 12),
    tracking_cfg=snakemake.params.tracking,
)

from pathlib import Path  # noqa: E402

from panel2patch.corpus.report import inline_report  # noqa: E402

inline_report(Path(snakemake.output.report) / "index.html", snakemake.output.standalone)
