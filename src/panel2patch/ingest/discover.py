"""Find the article units in a list of input paths and group them into shards.

A unit is one thing the ingest stage reads as one article:

- ``jats``: a JATS/NLM ``.nxml``/``.xml`` file; its figure files are looked up in its folder;
- ``package``: a PMC OA ``.tar.gz``/``.tgz``/``.tar`` or a ``.zip`` holding an article;
- ``pdf``: a PDF, read through PyMuPDF;
- ``unsupported``: a file named explicitly that is none of these (ingest records a skip);
- ``link``: a symbolic link met in a folder walk, to a folder or to a file named like one of the
  above; links are never followed (they may lead out of the input tree), ingest records a skip.

Folders are walked; a folder holding a JATS file is an article folder, and PDFs next to a JATS
file are not separate units (the JATS is the better source of the same figures). Paths named
explicitly are used even when they are links.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

from .jats import is_jats
from .package import is_package


@dataclass(frozen=True, order=True)
class Unit:
    path: str
    kind: str  # jats | package | pdf | unsupported | link

    def as_dict(self) -> dict:
        return {"path": self.path, "kind": self.kind}


def _file_unit(path: Path, explicit: bool) -> Unit | None:
    name = path.name.lower()
    if not explicit and path.is_symlink():
        return Unit(str(path), "link") if is_package(path) or name.endswith((".pdf", ".nxml", ".xml")) else None
    if is_package(path):
        return Unit(str(path), "package")
    if name.endswith(".pdf"):
        return Unit(str(path), "pdf")
    if name.endswith((".nxml", ".xml")) and (name.endswith(".nxml") or is_jats(path)):
        return Unit(str(path), "jats")
    return Unit(str(path), "unsupported") if explicit else None


def discover_units(paths: list[str | Path]) -> list[Unit]:
    """All units under ``paths``, sorted by path, without duplicates."""
    units: set[Unit] = set()
    for raw in paths:
        path = Path(raw)
        if path.is_file():
            if (u := _file_unit(path, explicit=True)) is not None:
                units.add(u)
            continue
        if not path.is_dir():
            raise FileNotFoundError(f"input path does not exist: {raw}")
        for folder, dirs, files in os.walk(path):
            dirs.sort()
            found = [u for f in sorted(files) if (u := _file_unit(Path(folder) / f, explicit=False))]
            found += [Unit(str(Path(folder) / d), "link") for d in dirs if (Path(folder) / d).is_symlink()]
            has_jats = any(u.kind == "jats" for u in found)
            units.update(u for u in found if not (has_jats and u.kind == "pdf"))
    return sorted(units)


def make_shards(units: list[Unit], shard_size: int) -> dict[str, list[Unit]]:
    """Consecutive groups of ``shard_size`` units, named ``shard-00000``, ``shard-00001``, ..."""
    if shard_size < 1:
        raise ValueError("shard_size must be >= 1")
    return {f"shard-{i // shard_size:05d}": units[i : i + shard_size] for i in range(0, len(units), shard_size)}
