"""Snakemake adapter: an ablation arm's run config = its base run config + the arm's overrides (panel2patch.evaluate.ablation)."""
import sys

sys.stderr = open(snakemake.log[0], "w", buffering=1)

from pathlib import Path

from panel2patch.evaluate.ablation import derive_run_config

text = derive_run_config(snakemake.input.base, snakemake.params.overrides)
Path(snakemake.output.run_config).write_text(text)
print(text, file=sys.stderr)
