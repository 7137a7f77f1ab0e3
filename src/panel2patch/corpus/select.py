"""Corpus-wide selection: one copy of each article, near-duplicate removal by perceptual hash and
the train/val/test split by article.

Both work on the pairs table of :mod:`panel2patch.corpus.pairs` (all shards together).
"""

from __future__ import annotations

import hashlib
import re
from collections import defaultdict
from pathlib import PurePosixPath

import pandas as pd

SPLITS = ("train", "val", "test")


_VERSION = re.compile(r"(?<![A-Za-z0-9])v(\d+)(?![0-9])", re.I)


def copy_version(source_path: str) -> int:
    """The version a file or package name states (eLife's ``elife-00353-v2.xml``,
    ``elife-00353-vor-v1-20121213000000.zip``), the highest of ``package!member``; 0 if none."""
    names = [PurePosixPath(part.replace("\\", "/")).name for part in source_path.split("!")]
    return max((int(v) for name in names for v in _VERSION.findall(name)), default=0)


def drop_duplicate_copies(pairs: pd.DataFrame) -> pd.DataFrame:
    """Mark the kept pairs of every copy but one of each article as dropped (``duplicate-article``,
    detail = the kept copy). A copy is one ingested file (``shard``, ``source_path``); copies are
    the same article when they share an article id or a DOI (an article without any id is named
    after its file, so two such files of the same name count as copies too: their figure ids would
    collide). The copy kept: the highest :func:`copy_version`, then the smallest source path, then
    shard, so the choice depends only on the inputs, not on how they were sharded."""
    pairs = pairs.copy()
    known = pairs[pairs.source_path.notna()] if len(pairs) else pairs
    copies = list(known[["shard", "source_path", "article_id", "doi"]].drop_duplicates(["shard", "source_path"])
                  .itertuples(index=False))
    root = list(range(len(copies)))

    def find(i: int) -> int:
        while root[i] != i:
            root[i] = i = root[root[i]]
        return i

    first: dict[tuple[str, str], int] = {}
    for i, c in enumerate(copies):
        for key in (("id", c.article_id), ("doi", (c.doi or "").lower())):
            if key[1]:
                root[find(i)] = find(first.setdefault(key, i))
    groups: dict[int, list] = defaultdict(list)
    for i, c in enumerate(copies):
        groups[find(i)].append(c)
    detail: dict[tuple[str, str], str] = {}
    for group in groups.values():
        kept = min(group, key=lambda c: (-copy_version(c.source_path), c.source_path, c.shard))
        detail.update({(c.shard, c.source_path): f"copy of {kept.source_path} ({kept.shard})" for c in group if c is not kept})
    if detail:
        why = pd.Series([detail.get(k) for k in zip(pairs.shard, pairs.source_path)], index=pairs.index)
        hit = why.notna() & pairs.keep
        pairs.loc[hit, "drop_detail"] = why[hit]
        pairs.loc[hit, ["keep", "drop_reason"]] = [False, "duplicate-article"]
    return pairs


def _bands(h: int, n: int, bits: int) -> list[tuple[int, int]]:
    """The ``bits`` bits of ``h`` cut into ``n`` bands of (almost) equal width: (band, value)."""
    edges = [round(i * bits / n) for i in range(n + 1)]
    return [(i, (h >> lo) & ((1 << (hi - lo)) - 1)) for i, (lo, hi) in enumerate(zip(edges, edges[1:]))]


def near_duplicates(hashes: list[str | None], max_distance: int, groups: list | None = None) -> dict[int, int]:
    """{index: index of the earlier hash it duplicates} for hashes (hex strings of equal length)
    within ``max_distance`` bits; hashes of the same ``groups`` value are never compared.

    Exact by the pigeonhole principle: two hashes that differ in at most d bits agree on at least
    one of d + 1 bands, so only hashes sharing a band value are compared (near-linear on real
    corpora instead of all pairs)."""
    n_bands = max_distance + 1
    buckets: dict[tuple[int, int], list[int]] = defaultdict(list)
    values = [int(h, 16) if h else None for h in hashes]
    bits = 4 * max((len(h) for h in hashes if h), default=16)
    dup: dict[int, int] = {}
    for i, v in enumerate(values):
        if v is None:
            continue
        bands = _bands(v, n_bands, bits)
        seen: set[int] = set()
        for key in bands:
            for j in buckets[key]:
                if j not in seen and j not in dup and (groups is None or groups[j] != groups[i]):
                    seen.add(j)
                    if (v ^ values[j]).bit_count() <= max_distance:
                        dup[i] = j
                        break
            if i in dup:
                break
        if i not in dup:
            for key in bands:
                buckets[key].append(i)
    return dup


def drop_near_duplicates(pairs: pd.DataFrame, max_distance: int | None) -> pd.DataFrame:
    """Mark kept pairs whose image is a near-duplicate of an earlier kept pair of the same level
    from another figure (order: article, figure, pair id) as dropped (``near-duplicate``, detail =
    the kept pair's id). Their children are dropped by :func:`propagate_drops`, called next."""
    pairs = pairs.copy()
    if max_distance is None or max_distance < 0:
        return pairs
    for _level, grp in pairs[pairs.keep].sort_values(["article_id", "figure_id", "pair_id"]).groupby("level", sort=False):
        idx = list(grp.index)
        for i, j in near_duplicates(list(grp.phash), max_distance, list(grp.figure_id)).items():
            pairs.loc[idx[i], ["keep", "drop_reason", "drop_detail"]] = [False, "near-duplicate", grp.pair_id.iloc[j]]
    return pairs


def propagate_drops(pairs: pd.DataFrame) -> pd.DataFrame:
    """Drop (``parent-dropped``) every kept pair whose parent pair is not kept, figure -> panel ->
    patch, so that the kept pairs of every level link up."""
    pairs = pairs.copy()
    for level in ("panel", "patch"):
        kept_ids = set(pairs.pair_id[pairs.keep])
        orphan = pairs.keep & (pairs.level == level) & ~pairs.parent_id.isin(kept_ids)
        pairs.loc[orphan, "drop_detail"] = pairs.loc[orphan, "parent_id"]
        pairs.loc[orphan, ["keep", "drop_reason"]] = [False, "parent-dropped"]
    return pairs


def _unit(article_id: str, seed: int) -> float:
    """A stable pseudo-random number in [0, 1) per article (sha1 of seed and id)."""
    return int.from_bytes(hashlib.sha1(f"{seed}:{article_id}".encode()).digest()[:8], "big") / 2**64


def split_articles(article_ids, val: float, test: float, seed: int = 0) -> dict[str, str]:
    """{article_id: split}: each article goes wholly to one split.

    An article's split depends only on its own hash (``test`` if u < test, ``val`` if
    u < test + val, else ``train``), so it stays put as a corpus grows. In a small corpus where a
    split with a positive fraction drew no article, the train articles whose u lies nearest above
    that split's range move to it (needs at least 3 articles), so validation always has data."""
    if not (0 <= val and 0 <= test and val + test < 1):
        raise ValueError(f"corpus.split: val={val}, test={test}: need 0 <= val, test and val + test < 1")
    u = {a: _unit(a, seed) for a in sorted(set(article_ids))}
    out = {a: "test" if x < test else "val" if x < test + val else "train" for a, x in u.items()}
    if len(u) >= 3:
        for split, frac, lower in (("test", test, 0.0), ("val", val, test)):
            if frac > 0 and split not in out.values():
                train = [a for a in u if out[a] == "train"]
                if len(train) > 1:
                    out[min(train, key=lambda a: (u[a] - lower) % 1.0)] = split
    return out
