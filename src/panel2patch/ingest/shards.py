"""Stable shards: an article's shard is a function of its own key (``discover.article_key``) alone,
so adding articles never moves one that is already placed, and a rerun touches only the shards
whose articles changed.

- A PMCID key (``PMC1234567``, from a PMC OA file list or a file named ``PMC1234567.*``) falls in a
  key range: ``shard-pmcNNNNN`` holds PMC1234000-PMC1234999 for ``shard_size`` 1000 (N = id //
  shard_size). So a shard holds at most ``shard_size`` articles (fewer where ids are not in the
  OA subset: about half of them are), and since PMC gives new articles new, higher ids, an
  incremental update adds articles to the newest shards and reruns an old shard only for an
  article of its own that changed. A hash would scatter each day's few thousand new articles over
  almost every shard and rerun them all.
- Any other key (eLife file names, PDFs) is hashed: ``shard-NNNNN`` with N = blake2b(key) mod
  ``hash_shards``. The count is fixed, so shards grow with such inputs: choose it as about the
  number of such articles / the articles per job wanted; changing it moves those articles once.

Each shard's units are written to ``<folder>/<shard>.json`` (:func:`write_manifests`) with a
version stamp per article (size and mtime of a walked file, the list's last-updated time of a bulk
article), and the file is rewritten only when its content changes: the ingest rule's one input,
so Snakemake reruns exactly the shards whose manifest changed, without one input (and one
``stat`` by Snakemake) per article.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
from pathlib import Path

from .discover import _EXTRA, Unit, article_key

_PMC_KEY = re.compile(r"PMC(\d+)")


def shard_of(key: str, shard_size: int, hash_shards: int) -> str:
    """``shard-pmcNNNNN`` (PMCID range) or ``shard-NNNNN`` (hash bucket) for an article key."""
    if m := _PMC_KEY.fullmatch(key):
        return f"shard-pmc{int(m[1]) // shard_size:05d}"
    h = int.from_bytes(hashlib.blake2b(key.encode(), digest_size=8).digest(), "big")
    return f"shard-{h % hash_shards:05d}"


def make_shards(units: list[Unit], shard_size: int, hash_shards: int = 16) -> dict[str, list[Unit]]:
    """{shard name: its units in the order given (discover_units sorts them)}, shards sorted by
    name, no empty shard."""
    if shard_size < 1 or hash_shards < 1:
        raise ValueError("shard_size and hash_shards must be >= 1")
    shards: dict[str, list[Unit]] = {}
    for u in units:
        key = u.pmcid or article_key(u)
        if key[:3] == "PMC" and key[3:].isdigit():  # shard_of's first case, inlined (1M units)
            name = f"shard-pmc{int(key[3:]) // shard_size:05d}"
        else:
            name = shard_of(key, shard_size, hash_shards)
        shards.setdefault(name, []).append(u)
    return {name: shards[name] for name in sorted(shards)}


def _stamp(unit: Unit, stats: dict[str, list | None]) -> list | None:
    """[bytes, mtime_ns] of the file a unit reads (an archive once per call), None if missing; a
    bulk package is versioned by its list's last-updated time instead (no per-article stat)."""
    if unit.updated and unit.kind != "bulk_xml":
        return None
    if unit.path not in stats:
        try:
            st = os.lstat(unit.path)
            stats[unit.path] = [st.st_size, st.st_mtime_ns]
        except OSError:
            stats[unit.path] = None
    return stats[unit.path]


_ENC = json.encoder.encode_basestring_ascii  # json.dumps's own string encoder (ensure_ascii)


def _row(unit: Unit, stamp: list | None) -> str:
    """``json.dumps({**unit.as_dict(), "stamp": stamp})``, the same text without the encoder's
    per-call overhead (a million rows at 1M articles)."""
    parts = [f'{{"path": {_ENC(unit.path)}, "kind": {_ENC(unit.kind)}']
    for key in _EXTRA:
        if value := getattr(unit, key):
            parts.append(f', "{key}": {_ENC(value)}')
    parts.append(', "stamp": null}' if stamp is None else f', "stamp": [{stamp[0]}, {stamp[1]}]}}')
    return "".join(parts)


def manifest_text(shard: str, units: list[Unit], stats: dict | None = None) -> str:
    stats = {} if stats is None else stats
    rows = [_row(u, _stamp(u, stats)) for u in units]
    return '{"shard": "%s", "units": [\n%s\n]}\n' % (shard, ",\n".join(rows))


def write_manifests(shards: dict[str, list[Unit]], folder: str | Path) -> dict[str, str]:
    """Write ``folder/<shard>.json`` for every shard whose content changed (atomically); return
    {shard: path}. Unchanged manifests keep their mtime, so their shards do not rerun."""
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    stats: dict = {}
    paths = {}
    for shard, units in shards.items():
        path = folder / f"{shard}.json"
        text = manifest_text(shard, units, stats)
        try:
            same = path.read_text() == text
        except OSError:
            same = False
        if not same:
            tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
            tmp.write_text(text)
            os.replace(tmp, path)
        paths[shard] = str(path)
    return paths


def read_manifest(path: str | Path) -> list[Unit]:
    """The units of a shard manifest (their stamps dropped)."""
    data = json.loads(Path(path).read_text())
    return [Unit(**{k: v for k, v in row.items() if k != "stamp"}) for row in data["units"]]
