#!/usr/bin/env bash
# Set up and run panel2patch on a fresh Debian machine.
#   ./run.sh demo     set up, then run the workflow end to end on resources/sample
#   ./run.sh test     set up, then run the test suite (extra args go to pytest)
#   ./run.sh setup    only set up: Debian packages (as root), .venv with the pinned stack
set -euo pipefail
cd "$(dirname "$0")"
PY=${PYTHON:-python3}
VENV=.venv

# apt_install PACKAGE... installs Debian packages; returns 1, with the command to run, when that
# needs root and we are not root (and sudo -n does not work).
apt_install() {
  [ $# -eq 0 ] && return 0
  local sudo=""
  if [ "$(id -u)" != 0 ]; then
    if command -v sudo >/dev/null 2>&1 && sudo -n true 2>/dev/null; then sudo="sudo"; else
      echo "panel2patch needs Debian packages: $*" >&2
      echo "  run as root:  apt-get update && apt-get install -y --no-install-recommends $*" >&2
      return 1
    fi
  fi
  if ! command -v apt-get >/dev/null 2>&1; then
    echo "panel2patch needs: $* (no apt-get here: install them with your package manager)" >&2
    return 1
  fi
  echo "installing Debian packages: $*" >&2
  $sudo apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq --no-install-recommends "$@" >/dev/null
}

# apt_need COMMAND:PACKAGE... installs the packages whose command is missing.
apt_need() {
  local missing=() pair
  for pair in "$@"; do
    command -v "${pair%%:*}" >/dev/null 2>&1 || missing+=("${pair#*:}")
  done
  apt_install "${missing[@]}"
}

setup() {
  # Debian's python3 has no venv/ensurepip without python3-venv.
  "$PY" -c "import ensurepip, venv" >/dev/null 2>&1 || apt_install python3-venv
  apt_need tesseract:tesseract-ocr g++:g++
  # DeepSpeed compiles small C++ ops against the Python headers on first use (CPU path too).
  "$PY" -c "import os, sysconfig; raise SystemExit(not os.path.exists(os.path.join(sysconfig.get_paths()['include'], 'Python.h')))" \
    || apt_install python3-dev
  if [ ! -x "$VENV/bin/python" ]; then
    "$PY" -m venv "$VENV"
  fi
  local stamp="$VENV/.installed-$(sha256sum pyproject.toml | cut -c1-16)"
  if [ ! -f "$stamp" ]; then
    "$VENV/bin/python" -m pip install -q --upgrade pip
    "$VENV/bin/python" -m pip install -q -e ".[test]"
    rm -f "$VENV"/.installed-* && touch "$stamp"
  fi
}

case "${1:-}" in
  setup) setup ;;
  demo)
    setup
    "$VENV/bin/snakemake" --cores all   # ends with the supervision yield
    echo "Corpus: results/corpus/shards/ (audit: $VENV/bin/panel2patch corpus check results/corpus)"
    echo "QC report: results/corpus/report/index.html   model: results/train/tiny/final/"
    echo "MLflow runs: $VENV/bin/mlflow ui --backend-store-uri sqlite:///results/mlflow/mlflow.db"
    # the evaluation of each trained run (rule evaluate): model vs its untrained baseline and references
    for table in results/evaluate/*/evaluation.md; do
      [ -f "$table" ] && { echo; echo "Evaluation: $table"; cat "$table"; }
    done
    # the audit (rule audit): lineage through MLflow, reproduction (config audit.reproduce), claims
    if [ -f results/audit/audit.json ]; then
      echo; echo "Audit: results/audit/audit.md (also .html; by hand: $VENV/bin/panel2patch audit results --reproduce ingest)"
      "$VENV/bin/python" -m panel2patch.audit results/audit/audit.json
    fi
    ;;
  test)
    shift
    setup
    # Slurm is optional: the Slurm test skips, saying why, where it cannot be installed.
    apt_need slurmctld:slurmctld slurmd:slurmd sinfo:slurm-client munged:munge || echo "(Slurm tests will skip)" >&2
    exec "$VENV/bin/python" -m pytest "$@"
    ;;
  *) sed -n '2,5p' "$0" >&2; exit 2 ;;
esac
