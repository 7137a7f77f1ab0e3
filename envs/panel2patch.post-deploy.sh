#!/usr/bin/env bash
# Post-deploy script of envs/panel2patch.yaml: Snakemake runs it (from its copy in the conda
# prefix) inside the environment it has just created. It installs this checkout of panel2patch,
# editable, with the pinned dependencies of pyproject.toml, so jobs run the checkout's code.
# P2P_REPO is the checkout: the Snakefile sets it to workflow.basedir (workflow/rules/inputs.smk).
# An environment belongs to the checkout that created it; give each checkout its own
# --conda-prefix (the default, .snakemake/conda, is per checkout).
set -euo pipefail
: "${P2P_REPO:?P2P_REPO (the panel2patch checkout) is not set: run this through snakemake}"
if [ ! -f "$P2P_REPO/pyproject.toml" ]; then
    echo "panel2patch post-deploy: no pyproject.toml in $P2P_REPO" >&2
    exit 1
fi
python -m pip install --no-input -e "$P2P_REPO"
