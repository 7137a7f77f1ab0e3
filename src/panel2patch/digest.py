"""sha256 of files and folders: the one definition every stage, the audit and MLflow logging use.

Kept free of heavy imports (no mlflow, no torch) so that jobs which only hash stay light.
"""

from __future__ import annotations

import hashlib
from pathlib import Path

# files that tools drop into output folders after the fact: not part of the content
_NOT_CONTENT = {".snakemake_timestamp"}


def sha256_file(path: str | Path, chunk: int = 1 << 20) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        for block in iter(lambda: fh.read(chunk), b""):
            h.update(block)
    return h.hexdigest()


def sha256_path(path: str | Path) -> str:
    """sha256 of a file; for a folder, of its sorted ``relative-path sha256`` lines (Snakemake's
    ``.snakemake_timestamp``, written into output folders after the job, is left out so the hash
    logged by the job reproduces)."""
    path = Path(path)
    if path.is_dir():
        lines = [f"{p.relative_to(path).as_posix()} {sha256_file(p)}" for p in sorted(path.rglob("*"))
                 if p.is_file() and p.name not in _NOT_CONTENT]
        return hashlib.sha256("\n".join(lines).encode()).hexdigest()
    return sha256_file(path)
