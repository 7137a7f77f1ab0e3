"""Find the article units in a list of input paths.

A unit is one thing the ingest stage reads as one article:

- ``jats``: a JATS/NLM ``.nxml``/``.xml`` file; its figure files are looked up in its folder;
- ``package``: a PMC OA ``.tar.gz``/``.tgz``/``.tar`` or a ``.zip`` holding an article;
- ``pdf``: a PDF, read through PyMuPDF;
- ``unsupported``: a file named explicitly that is none of these (ingest records a skip);
- ``link``: a symbolic link met in a folder walk, to a folder or to a file named like one of the
  above; links are never followed (they may lead out of the input tree), ingest records a skip;
- ``bulk_xml``, ``retracted``: articles of a PMC OA bulk tree, read from its file lists
  (:mod:`panel2patch.ingest.bulk`): the XML member ``member`` of the archive ``path`` (with the
  images of the package ``images``), or an article the lists mark retracted (ingest records a skip).

Folders are walked; a folder holding a JATS file is an article folder, and PDFs next to a JATS
file are not separate units (the JATS is the better source of the same figures). A folder holding
PMC OA file lists is a bulk tree: its articles come from the lists, its files are not walked.
Paths named explicitly are used even when they are links.

Each unit has a stable ``key`` (:func:`article_key`: the PMCID, else the file's name), from which
``panel2patch.ingest.shards`` places it in a shard that never changes when inputs are added.
"""

from __future__ import annotations

import operator
import os
import re
from pathlib import Path
from typing import NamedTuple

from .jats import is_jats
from .package import PACKAGE_SUFFIXES, is_package

# File stems that name no article: the key is then the article folder's name.
GENERIC_STEMS = {"manuscript", "article", "main", "paper", "index", "document", "fulltext"}
_SUFFIXES = (*PACKAGE_SUFFIXES, ".nxml", ".xml", ".pdf")
_PMCID = re.compile(r"PMC\d+", re.I)


class Unit(NamedTuple):
    """One article to ingest. A named tuple (immutable, ordered and hashed as the tuple of its
    fields): a million of them are built for all of PMC OA in a third of a frozen dataclass's time."""

    path: str
    kind: str  # jats | package | pdf | unsupported | link | bulk_xml | retracted
    # Only for articles of a PMC OA bulk tree (from its file lists; "" otherwise):
    member: str = ""   # bulk_xml, retracted: the article's XML inside the archive ``path``
    images: str = ""   # bulk_xml: the article's own package, whose figure files go with the XML
    pmcid: str = ""
    licence: str = ""  # the list's License column (used when the JATS states no licence)
    updated: str = ""  # the list's last-updated time: the article's version

    def as_dict(self) -> dict:
        """``path`` and ``kind``, plus the bulk fields that are set."""
        d = {"path": self.path, "kind": self.kind}
        for k in _EXTRA:
            if v := getattr(self, k):
                d[k] = v
        return d


UNIT_FIELDS = Unit._fields
# The order of discover_units: by path, kind and member, cheaper than comparing every field.
_SORT_KEY = operator.attrgetter("path", "kind", "member")
_EXTRA = UNIT_FIELDS[2:]


def article_key(unit: Unit) -> str:
    """The stable key a unit is sharded by: its PMCID when it has one (the lists' or a name like
    ``PMC123.tar.gz``), else the file name without its suffix (the folder's name for a generic
    ``manuscript.xml``). Never the full path: moving the input tree moves no article."""
    if unit.pmcid:
        return unit.pmcid.upper()
    path = unit.path.replace("\\", "/").rstrip("/")
    folder, _, name = path.rpartition("/")
    stem = name
    for suffix in _SUFFIXES:
        if stem.lower().endswith(suffix):
            stem = stem[: -len(suffix)]
            break
    if stem.lower() in GENERIC_STEMS and folder:
        stem = folder.rpartition("/")[2]
    if _PMCID.fullmatch(stem):
        return stem.upper()
    return stem


def _file_unit(path: str, name: str, explicit: bool, is_link: bool) -> Unit | None:
    lower = name.lower()
    if not explicit and is_link:
        return Unit(path, "link") if lower.endswith((*PACKAGE_SUFFIXES, ".pdf", ".nxml", ".xml")) else None
    if lower.endswith(PACKAGE_SUFFIXES):
        return Unit(path, "package")
    if lower.endswith(".pdf"):
        return Unit(path, "pdf")
    if lower.endswith(".nxml") or (lower.endswith(".xml") and is_jats(Path(path))):
        return Unit(path, "jats")
    return Unit(path, "unsupported") if explicit else None


def _walk(root: str, units: list[Unit], cache_dir: str | Path | None = None) -> None:
    """Walk ``root`` with ``os.scandir`` (one directory read per folder, no per-file ``stat``:
    the entry's type comes with the listing)."""
    from .bulk import bulk_units, is_bulk_root

    stack = [root]
    while stack:
        folder = stack.pop()
        with os.scandir(folder) as it:
            entries = sorted(it, key=lambda e: e.name)
        names = [e.name for e in entries]
        if is_bulk_root(folder, names):
            units.extend(bulk_units(folder, cache_dir))
            continue
        found, subdirs = [], []
        for e in entries:
            path = f"{folder}/{e.name}" if not folder.endswith("/") else folder + e.name
            if e.is_symlink():  # a link to a folder, or to a file named like an article: recorded, not followed
                if u := (Unit(path, "link") if e.is_dir() else _file_unit(path, e.name, False, True)):
                    found.append(u)
            elif e.is_dir():
                subdirs.append(path)
            elif e.is_file() and (u := _file_unit(path, e.name, False, False)):
                found.append(u)
        has_jats = any(u.kind == "jats" for u in found)
        units.extend(u for u in found if not (has_jats and u.kind == "pdf"))
        stack.extend(reversed(subdirs))


def discover_units(paths: list[str | Path], cache_dir: str | Path | None = None) -> list[Unit]:
    """All units under ``paths``, sorted by path, without duplicates. ``cache_dir``: where the
    units read from a PMC OA bulk tree's file lists are cached (:func:`.bulk.bulk_units`)."""
    units: list[Unit] = []
    for raw in paths:
        path = Path(raw)
        if path.is_file():
            if (u := _file_unit(str(path), path.name, True, False)) is not None:
                units.append(u)
            continue
        if not path.is_dir():
            raise FileNotFoundError(f"input path does not exist: {raw}")
        _walk(str(path), units, cache_dir)
    units.sort(key=_SORT_KEY)  # fast on the sorted runs a bulk tree gives
    seen: set[Unit] = set()
    return [u for u in units if not (u in seen or seen.add(u))]  # an input given twice


def make_shards(units: list[Unit], shard_size: int, hash_shards: int = 16) -> dict[str, list[Unit]]:
    """Stable shards (see :mod:`panel2patch.ingest.shards`); kept here for existing imports."""
    from .shards import make_shards as _make

    return _make(units, shard_size, hash_shards)
