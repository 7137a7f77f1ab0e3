"""PMC OA bulk trees: articles from the file lists, not from a walk of a million files.

The layout, as PMC distributes it (any subset of it is fine)::

    ROOT/oa_file_list.csv                 per-article packages (also oa_comm_use_file_list.csv, ...):
                                          File,Article Citation,Accession ID,
                                          Last Updated (YYYY-MM-DD HH:MM:SS),PMID,License[,Retracted]
    ROOT/oa_package/08/e0/PMC13900.tar.gz a package: the article's XML + figure files (File above)
    ROOT/oa_comm/xml/oa_comm_xml.PMC001xxxxxx.baseline.2024-01-01.tar.gz     XML only, no images
    ROOT/oa_comm/xml/oa_comm_xml.PMC001xxxxxx.baseline.2024-01-01.filelist.csv
    ROOT/oa_comm/xml/oa_comm_xml.incr.2024-01-02.tar.gz (+ .filelist.csv)    a daily update
                                          Article File,Article Citation,AccessionID,
                                          LastUpdated (YYYY-MM-DD HH:MM:SS),PMID,License,Retracted
    ROOT/oa_noncomm/..., ROOT/oa_other/...  the same for the other licence groups

(archive lists may also lie in ROOT or ROOT/oa_*/). A folder is such a root when it holds a
``*file_list.csv``, a ``*.filelist.csv`` or an ``oa_comm``/``oa_noncomm``/``oa_other`` folder.

Each PMCID becomes one unit, from the newest of its rows in all lists (last-updated time; on a
tie a package, which has the images, then an incremental archive): a newer version replaces the
older one. If that row says ``Retracted: yes`` the unit is ``retracted`` (ingest records the skip
``retracted``); if it is a package, a ``package`` unit; if it is an archive's XML, a ``bulk_xml``
unit that reads the XML from the archive and the figure files from the article's package (joined
by PMCID; without a package the figures are skipped as ``missing-image``: bulk XML has no images).
Licence and PMCID come from the lists (the JATS licence is used when it states one).

Files are never listed or opened here, only the lists (and ``stat`` of the few archives, for
their version stamp): a file a list names but that is missing is a skip at ingest.

Reading the lists of all PMC OA (about 6 million rows) takes tens of CPU seconds, and every
Snakemake process does it again: the workflow run and, under Slurm, every job. With ``cache_dir``
the units are kept in one pickle per state of the lists (their paths, sizes and modification
times; any change to a list, or to this module's format, makes a new one), so a job loads them
instead of reading the lists again.
"""

from __future__ import annotations

import csv
import hashlib
import json
import logging
import operator
import os
import pickle
import re
import tempfile
from pathlib import Path

import pandas as pd

from .discover import _SORT_KEY, Unit

log = logging.getLogger(__name__)

SUBSETS = ("oa_comm", "oa_noncomm", "oa_other")
_COLUMNS = {"file": "file", "articlefile": "file", "accessionid": "pmcid", "license": "licence",
            "retracted": "retracted", "pmid": "pmid"}
_YES = {"yes", "y", "true", "1"}


def is_bulk_root(folder: str, names: list[str]) -> bool:
    return any(n.endswith(("file_list.csv", ".filelist.csv")) or n in SUBSETS for n in names)


def _column(name: str) -> str | None:
    key = re.sub(r"[^a-z]", "", name.lower())
    return "updated" if key.startswith("lastupdated") else _COLUMNS.get(key)


_FIELDS = ("file", "pmcid", "updated", "licence", "retracted", "pmid")


def iter_list(path: str | Path):
    """Rows of a PMC file list as tuples in the order of ``_FIELDS`` (stripped strings; "" where
    the list lacks the column); rows without a file or PMCID are skipped with a warning. A list
    without File/Accession ID columns is an error. (The csv module: no DataFrame of a million
    rows is built, a few seconds per million rows.)"""
    with open(path, newline="", encoding="utf-8", errors="replace") as fh:
        reader = csv.reader(fh)
        header = next(reader, [])
        cols = [_column(h) for h in header]
        if "file" not in cols or "pmcid" not in cols:
            raise ValueError(f"{path}: not a PMC OA file list (needs the columns File or Article File, "
                             f"and Accession ID or AccessionID; has {header})")
        width, n_bad = len(header), 0
        # a missing column reads the "" appended to each record (index ``width``)
        pick = operator.itemgetter(*(cols.index(f) if f in cols else width for f in _FIELDS))
        for rec in reader:
            if len(rec) != width:
                rec = rec[:width] + [""] * (width - len(rec))
            rec.append("")
            row = tuple(map(str.strip, pick(rec)))
            if row[0] and row[1]:
                yield row
            else:
                n_bad += 1
    if n_bad:
        log.warning("%s: %d rows without a file or PMCID ignored", path, n_bad)


def read_list(path: str | Path) -> pd.DataFrame:
    """A PMC file list as a table with the columns of ``_FIELDS`` (see :func:`iter_list`)."""
    return pd.DataFrame(list(iter_list(path)), columns=list(_FIELDS))


def find_lists(root: str) -> tuple[list[str], list[str]]:
    """(package lists, archive lists) of a bulk root, without walking its package folders."""
    packages, archives = [], []
    for folder in [root, *(f"{root}/{s}" for s in SUBSETS), *(f"{root}/{s}/xml" for s in SUBSETS)]:
        if not os.path.isdir(folder):
            continue
        for name in sorted(os.listdir(folder)):
            if name.endswith(".filelist.csv"):
                archives.append(f"{folder}/{name}")
            elif name.endswith("file_list.csv") and folder == root:
                packages.append(f"{folder}/{name}")
    return packages, archives


_CACHE_FORMAT = 1  # bump when the units read from the lists change for the same lists


def _cache_file(cache_dir: str | Path, root: str, lists: list[str]) -> Path:
    """The cache file for this state of the lists: keyed by their paths, sizes and mtimes."""
    state = [_CACHE_FORMAT, root]
    for p in lists:
        st = os.stat(p)
        state.append([p, st.st_size, st.st_mtime_ns])
    key = hashlib.sha256(json.dumps(state).encode()).hexdigest()[:16]
    return Path(cache_dir) / f"bulk-units-{_root_key(root)}-{key}.pickle"


def _root_key(root: str) -> str:
    return hashlib.sha256(root.encode()).hexdigest()[:8]


def bulk_units(root: str | Path, cache_dir: str | Path | None = None) -> list[Unit]:
    """One unit per PMCID of the bulk tree at ``root`` (see the module docstring); with
    ``cache_dir``, loaded from (or saved to) the cache of this state of the lists."""
    root = str(root).rstrip("/") or "/"
    package_lists, archive_lists = find_lists(root)
    if cache_dir is None:
        return _read_units(root, package_lists, archive_lists)
    cache = _cache_file(cache_dir, root, package_lists + archive_lists)
    try:
        with open(cache, "rb") as fh:
            return list(map(Unit._make, pickle.load(fh)))
    except FileNotFoundError:
        pass
    except (OSError, pickle.UnpicklingError, EOFError, TypeError, ValueError) as exc:
        log.warning("%s: unreadable bulk-unit cache (%s); reading the lists again", cache, exc)
    units = _read_units(root, package_lists, archive_lists)
    cache.parent.mkdir(parents=True, exist_ok=True)
    for old in cache.parent.glob(f"bulk-units-{_root_key(root)}-*.pickle"):  # this root's earlier lists
        if old != cache:
            old.unlink(missing_ok=True)
    fd, tmp = tempfile.mkstemp(dir=cache.parent, prefix=".bulk-units-")
    with os.fdopen(fd, "wb") as fh:  # written whole, then renamed: concurrent jobs see all or nothing
        pickle.dump([tuple(u) for u in units], fh, protocol=pickle.HIGHEST_PROTOCOL)
    os.chmod(tmp, 0o644)
    os.replace(tmp, cache)
    return units


def _read_units(root: str, package_lists: list[str], archive_lists: list[str]) -> list[Unit]:
    # PMCID -> (rank, path, member, licence, retracted) of its newest row; rank: last-updated, then
    # package 2 > archive 1, then incremental. Packages first: ``package`` keeps their newest.
    package: dict[str, tuple] = {}
    for lst in package_lists:
        for file, pmcid, updated, licence, retracted, _ in iter_list(lst):
            pmcid, path = pmcid.upper(), f"{root}/{file}"
            rank = (updated, 2, 0, path)
            old = package.get(pmcid)
            if old is None or rank > old[0]:
                package[pmcid] = (rank, path, "", licence, retracted)
    best = dict(package)
    for lst in archive_lists:
        archive = lst[: -len(".filelist.csv")] + ".tar.gz"
        incr = int(".incr." in Path(archive).name)
        for member, pmcid, updated, licence, retracted, _ in iter_list(lst):
            pmcid = pmcid.upper()
            rank = (updated, 1, incr, archive)
            old = best.get(pmcid)
            if old is None or rank > old[0]:
                best[pmcid] = (rank, archive, member, licence, retracted)
    units: list[Unit] = []
    no_package = (None, "")
    for pmcid, (rank, path, member, licence, retracted) in best.items():
        if retracted and retracted.lower() in _YES:
            units.append(Unit(path, "retracted", member, "", pmcid, licence, rank[0]))
        elif not member:
            units.append(Unit(path, "package", "", "", pmcid, licence, rank[0]))
        else:
            units.append(Unit(path, "bulk_xml", member, package.get(pmcid, no_package)[1], pmcid, licence, rank[0]))
    units.sort(key=_SORT_KEY)  # the order of discover_units: it then merges sorted runs
    return units
