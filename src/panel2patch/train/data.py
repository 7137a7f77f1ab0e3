"""WebDataset input of granularity-aware pretraining: figure, panel and patch pairs in tar shards.

Format (what the corpus stage writes and :func:`write_synthetic_shards` imitates)::

    <dir>/train-000000.tar  train-000001.tar ...  val-000000.tar ...   # <split>-<6 digits>.tar
    <dir>/sizes.json        {"train-000000.tar": 412, "val-000000.tar": 37, ...}  # pairs per shard

Three tar members per image-text pair, keyed by a unique ``__key__``: the pair id with "." made
"_" (WebDataset splits member names at the first dot; "-2" ... on a clash within a shard):

* ``<key>.jpg`` (or ``.png``): the image, RGB; a figure, a panel crop or a patch crop.
* ``<key>.txt``: the text (UTF-8), the JSON's ``text`` again, for open_clip_train's webdataset
  loader (``python -m open_clip_train.main --dataset-type webdataset --train-data <dir>/train-{...}.tar``).
* ``<key>.json``::

    {"level": "figure" | "panel" | "patch",
     "text": "caption / subcaption / marker phrase",
     "id": "PMC123_F2_A_p0",        # unique pair id
     "figure_id": "PMC123_F2",      # the figure the pair comes from (all levels)
     "article_id": "PMC123",
     "panel_id": "PMC123_F2_A",     # panel and patch levels: the panel (itself for a panel)
     "parent_id": "PMC123_F2",      # panel: its figure id; patch: its panel id; figure: null
     "split": "train" | "val" | "test",
     "licence": "CC BY 4.0", ...}   # further fields are carried but not used here

Writers keep all pairs of one figure contiguous inside a shard (figure, then its panels, then
their patches) and never split a figure across shards: batches are then cut from consecutive
pairs, so a figure and its panels usually share a batch, which the cross-level loss needs.
Shards are shuffled per epoch (seeded); pairs within a shard keep their order.

Pipeline (open_clip's): shards -> split_by_node -> split_by_worker -> tar -> decode -> keep the
configured levels -> transform + tokenize -> batch -> :func:`collate`, which returns per level::

    {"figure": {"image": (n, 3, S, S) float, "ids": (n, L) int64,
                "id": (n,), "figure_id": (n,), "article_id": (n,), "panel_id": (n,),
                "parent_id": (n,), "text_id": (n,),          # text_id: hash of the normalised text
                # only with perturb_k = K > 0 (perturbed-caption discrimination):
                "perturbed_rows": (m,) int64,                # rows that got K perturbations (m <= n)
                "perturbed_ids": (m, K, L) int64}, ...}      # their K perturbed texts, tokenized

with every string id hashed to a global int64 (:func:`hash_id`; -1 for none), as the losses
compare ids across ranks.  Levels with no pair in the batch are present with 0 rows, so every
rank runs the same collectives.  Perturbations (:func:`panel2patch.train.perturb.perturb`) are a
pure function of (text, ``perturb_seed``), so a resumed run sees the same ones.
"""

from __future__ import annotations

import hashlib
import io
import json
import random
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path

import torch

LEVELS = ("figure", "panel", "patch")
SPLITS = ("train", "val", "test")
SAMPLE_FIGURES = Path(__file__).resolve().parents[3] / "resources" / "sample" / "elife-32671"


# ---------------------------------------------------------------------------------- ids, shards
def hash_id(value: str | None) -> int:
    """A string id -> a stable non-negative int64 (first 63 bits of its sha1); None -> -1."""
    if value is None or value == "":
        return -1
    return int.from_bytes(hashlib.sha1(str(value).encode()).digest()[:8], "big") >> 1


def read_sizes(data_dir: str | Path) -> dict[str, int]:
    return json.loads((Path(data_dir) / "sizes.json").read_text())


def shard_list(data_dir: str | Path, split: str) -> list[str]:
    """The shards of ``split`` listed in ``sizes.json``, sorted."""
    data_dir = Path(data_dir)
    names = sorted(n for n in read_sizes(data_dir) if n.startswith(f"{split}-"))
    if not names:
        raise FileNotFoundError(f"{data_dir}: no {split!r} shards in sizes.json")
    return [str(data_dir / n) for n in names]


def count_pairs(data_dir: str | Path, split: str) -> int:
    return sum(v for k, v in read_sizes(data_dir).items() if k.startswith(f"{split}-"))


def manifest(data_dir: str | Path) -> dict:
    """sha256 of ``sizes.json`` and of every shard, and one digest over them all (the model card
    names it): ``{"digest": ..., "sizes_sha256": ..., "shards": {name: {"sha256", "pairs"}}}``."""
    from panel2patch.digest import sha256_path

    data_dir = Path(data_dir)
    sizes = read_sizes(data_dir)
    shards = {n: {"sha256": sha256_path(data_dir / n), "pairs": sizes[n]} for n in sorted(sizes)}
    sizes_sha = sha256_path(data_dir / "sizes.json")
    lines = [f"sizes.json {sizes_sha}"] + [f"{n} {v['sha256']}" for n, v in shards.items()]
    return {"digest": hashlib.sha256("\n".join(lines).encode()).hexdigest(), "sizes_sha256": sizes_sha, "shards": shards}


def licence_counts(data_dir: str | Path, split: str = "train") -> dict[str, dict[str, int]]:
    """Pairs of ``split`` per licence and level, from the samples' JSON (``licence_code`` when the
    corpus stage set it, else the ``licence`` text; "unknown" without either):
    ``{licence: {"figure": n, "panel": n, "patch": n}}``.  Reads only the JSON members."""
    import tarfile

    counts: dict[str, dict[str, int]] = {}
    names = sorted(n for n in read_sizes(data_dir) if n.startswith(f"{split}-"))
    for name in names:
        with tarfile.open(Path(data_dir) / name) as tar:
            for member in tar:
                if not member.isfile() or not member.name.endswith(".json"):
                    continue
                meta = json.loads(tar.extractfile(member).read())
                lic = meta.get("licence_code") or meta.get("licence") or "unknown"
                row = counts.setdefault(str(lic), dict.fromkeys(LEVELS, 0))
                row[meta.get("level", "figure")] = row.get(meta.get("level", "figure"), 0) + 1
    return dict(sorted(counts.items()))


# ------------------------------------------------------------------------------------ pipeline
def _decode(sample: dict) -> dict:
    from PIL import Image

    meta = json.loads(sample["json"])
    raw = sample.get("jpg") or sample.get("png")
    if raw is None:
        raise ValueError(f"{sample.get('__key__')}: no jpg/png member")
    meta["image"] = Image.open(io.BytesIO(raw)).convert("RGB")
    return meta


def text_key(text: str | None) -> int:
    """:func:`hash_id` of a text with case and spacing normalised ("identical text" for MGLL)."""
    return hash_id(" ".join(str(text).lower().split()) if text else None)


def collate(samples: Sequence[dict], tokenizer: Callable, levels: Sequence[str] = LEVELS,
            perturb_k: int = 0, perturb_seed: int = 0) -> dict:
    """Decoded + transformed samples -> per-level tensors (see the module docstring)."""
    out = {}
    for level in levels:
        rows = [s for s in samples if s["level"] == level]
        if rows:
            images = torch.stack([s["image"] for s in rows])
            ids = tokenizer([s["text"] for s in rows])
        else:  # shapes from any row of the batch, 0 rows
            ref = samples[0]["image"]
            images = ref.new_zeros((0, *ref.shape))
            ids = tokenizer(["x"])[:0]
        out[level] = {
            "image": images,
            "ids": ids,
            "id": torch.tensor([hash_id(s.get("id")) for s in rows], dtype=torch.long),
            "figure_id": torch.tensor([hash_id(s.get("figure_id")) for s in rows], dtype=torch.long),
            "article_id": torch.tensor([hash_id(s.get("article_id")) for s in rows], dtype=torch.long),
            "panel_id": torch.tensor([hash_id(s.get("panel_id")) for s in rows], dtype=torch.long),
            "parent_id": torch.tensor([hash_id(s.get("parent_id")) for s in rows], dtype=torch.long),
            "text_id": torch.tensor([text_key(s.get("text")) for s in rows], dtype=torch.long),
        }
        if perturb_k > 0:
            from panel2patch.train.perturb import perturb

            # K meaning-breaking variants per text; a text that admits fewer (one word) is left out
            variants = [perturb(s["text"], perturb_k, seed=perturb_seed) for s in rows]
            keep = [i for i, v in enumerate(variants) if len(v) == perturb_k]
            flat = [t for i in keep for t in variants[i]]
            pids = tokenizer(flat) if flat else ids[:0]
            out[level]["perturbed_rows"] = torch.tensor(keep, dtype=torch.long)
            out[level]["perturbed_ids"] = pids.view(len(keep), perturb_k, pids.shape[-1])  # (m, K, L)
    out["n"] = len(samples)
    return out


class _Collate:  # picklable for loader workers
    def __init__(self, tokenizer, levels, perturb_k=0, perturb_seed=0):
        self.tokenizer, self.levels = tokenizer, tuple(levels)
        self.perturb_k, self.perturb_seed = perturb_k, perturb_seed

    def __call__(self, samples):
        return collate(samples, self.tokenizer, self.levels, self.perturb_k, self.perturb_seed)


class _Transform:
    def __init__(self, transform):
        self.transform = transform

    def __call__(self, s):
        s["image"] = self.transform(s["image"])
        return s


class _RankFigures:
    """Keep every world-th figure (round robin in file order, a figure's pairs being contiguous):
    the ranks read the same shards in the same order, so they get disjoint, balanced shares."""

    def __init__(self, rank, world):
        self.rank, self.world = rank, world
        self.figure, self.index = None, -1

    def __call__(self, s):
        if s.get("figure_id") != self.figure:
            self.figure, self.index = s.get("figure_id"), self.index + 1
        return self.index % self.world == self.rank


def _rank_world() -> tuple[int, int]:
    import torch.distributed as dist

    if dist.is_available() and dist.is_initialized():
        return dist.get_rank(), dist.get_world_size()
    return 0, 1


class _KeepLevels:
    def __init__(self, levels):
        self.levels = frozenset(levels)

    def __call__(self, s):
        return s["level"] in self.levels


def make_pipeline(
    data_dir: str | Path,
    split: str,
    transform: Callable,
    tokenizer: Callable,
    batch_size: int,
    levels: Sequence[str] = LEVELS,
    epoch: int = 0,
    seed: int = 0,
    split_by_node: bool = True,
    partial: bool = False,
    perturb_k: int = 0,
):
    """A ``webdataset.DataPipeline`` of collated batches for one epoch.

    Shard order is shuffled with ``seed + epoch`` (the same on every rank, before
    ``split_by_node``), so an epoch's batches are a pure function of (seed, epoch, rank, world):
    resuming skips the batches already seen.  With fewer shards than ranks (a demo corpus) every
    rank reads all shards and keeps every world-th figure instead, so no rank is left without data.  ``split_by_node=False`` gives every rank all shards
    (evaluation).  ``partial=False`` drops a short last batch (training).  ``perturb_k`` > 0 adds
    K perturbed texts per pair (seeded by ``seed`` and ``epoch``: new ones each epoch)."""
    import webdataset as wds

    shards = shard_list(data_dir, split)
    if split == "train":
        random.Random(seed * 1_000_003 + epoch).shuffle(shards)
    stages = [wds.SimpleShardList(shards)]
    rank, world = _rank_world()
    by_figure = split_by_node and world > 1 and len(shards) < world  # a small corpus: too few shards to share out
    if split_by_node and not by_figure:
        stages.append(wds.split_by_node)
    stages += [
        wds.split_by_worker,
        wds.tarfile_to_samples(),
        wds.map(_decode),
        wds.select(_KeepLevels(levels)),
    ]
    if by_figure:  # every rank reads every shard and keeps its share of the (whole) figures
        stages.append(wds.select(_RankFigures(rank, world)))
    stages += [
        wds.map(_Transform(transform)),
        wds.batched(batch_size, collation_fn=_Collate(tokenizer, levels, perturb_k, seed * 1000 + epoch), partial=partial),
    ]
    return wds.DataPipeline(*stages)


def make_loader(pipeline, num_workers: int = 0, seed: int = 0):
    """A DataLoader over a pipeline that batches itself.  Keep ``num_workers`` <= shards per rank
    (webdataset raises "No samples found" for a worker without shards).  It gets a generator of
    its own: ``iter(loader)`` draws a seed from it, and drawing from torch's global RNG would
    make a resumed run's dropout differ from an uninterrupted one."""
    return torch.utils.data.DataLoader(pipeline, batch_size=None, num_workers=num_workers, shuffle=False,
                                       generator=torch.Generator().manual_seed(seed))


# ------------------------------------------------------------------------ synthetic test corpus
_COLOURS = ["red", "green", "blue", "yellow", "white", "dark", "bright", "brown"]
_THINGS = ["nuclei", "membrane", "vessel", "tumour", "neuron", "axon", "cortex", "duct", "gland", "lesion",
           "fibre", "epithelium", "stroma", "nodule", "cyst", "muscle"]
_MARKERS = ["arrow", "arrowhead", "asterisk"]


def _tint(img, rgb):
    from PIL import Image

    return Image.blend(img, Image.new("RGB", img.size, rgb), 0.35)


def write_synthetic_shards(
    out_dir: str | Path,
    n_figures: int = 24,
    seed: int = 0,
    figures_per_shard: int = 4,
    val_fraction: float = 0.25,
    size: int = 96,
    sources: Sequence[str | Path] | None = None,
) -> dict[str, int]:
    """A small multi-level corpus in the real format: ``n_figures`` figures (2-4 panels each, one
    patch per panel), figures cut from the bundled eLife sample figures (a random crop, tinted per
    figure so figures differ), panels as a grid of the figure, patches as the centre of a panel.
    Texts name the figure's colour and the panel's content, so image and text can be matched.
    Returns sizes.json's dict.  Deterministic for (n_figures, seed, ...)."""
    import webdataset as wds
    from PIL import Image

    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    rng = random.Random(seed)
    sources = list(sources or sorted(SAMPLE_FIGURES.glob("fig*.jpg")))
    if not sources:
        raise FileNotFoundError(f"no sample figures in {SAMPLE_FIGURES}")
    bases = []
    for p in sources:
        im = Image.open(p).convert("RGB")
        im.thumbnail((size * 3, size * 3))
        bases.append(im)

    figures = []  # (split, [(key, jpg bytes, meta)])
    n_val = max(1, round(n_figures * val_fraction)) if val_fraction > 0 else 0
    for f in range(n_figures):
        split = "val" if f >= n_figures - n_val else "train"
        article = f"PMCSYN{f // 2:04d}"  # two figures per article
        fig_id = f"{article}_F{f % 2 + 1}"
        base = rng.choice(bases)
        w, h = base.size
        cw, ch = min(w, size * 2), min(h, size * 2)
        x0, y0 = rng.randint(0, w - cw), rng.randint(0, h - ch)
        colour_i = rng.randrange(len(_COLOURS))
        rgb = [(220, 40, 40), (40, 200, 40), (40, 40, 220), (220, 220, 40), (240, 240, 240), (30, 30, 30),
               (250, 200, 150), (120, 70, 30)][colour_i]
        fig = _tint(base.crop((x0, y0, x0 + cw, y0 + ch)), rgb).resize((size, size))
        n_panels = rng.randint(2, 4)
        things = rng.sample(_THINGS, n_panels)
        letters = "ABCD"[:n_panels]
        caption = f"{_COLOURS[colour_i]} figure. " + " ".join(
            f"({L}) {_COLOURS[colour_i]} {t} in sample {f}." for L, t in zip(letters, things)
        )
        rows = [(fig_id, fig, {"level": "figure", "text": caption, "panel_id": None, "parent_id": None})]
        for i, (L, thing) in enumerate(zip(letters, things)):
            gx, gy = i % 2, i // 2
            half = size // 2
            panel = fig.crop((gx * half, gy * half, gx * half + half, gy * half + half)).resize((size, size))
            panel_id = f"{fig_id}_{L}"
            panel_box = [gx * half, gy * half, gx * half + half, gy * half + half]  # figure pixels, as the corpus's bbox
            rows.append((panel_id, panel, {"level": "panel", "text": f"({L}) {_COLOURS[colour_i]} {thing} in sample {f}.",
                                           "panel_id": panel_id, "parent_id": fig_id, "bbox": panel_box}))
            q = size // 4
            patch = panel.crop((q, q, size - q, size - q)).resize((size, size))
            marker = rng.choice(_MARKERS)
            s_ = half / size  # panel image pixels -> figure pixels
            patch_box = [panel_box[0] + q * s_, panel_box[1] + q * s_, panel_box[0] + (size - q) * s_, panel_box[1] + (size - q) * s_]
            rows.append((f"{panel_id}_p0", patch, {"level": "patch", "text": f"{marker} indicates the {thing}",
                                                   "panel_id": panel_id, "parent_id": panel_id, "bbox": patch_box}))
        samples = []
        for key, im, meta in rows:
            buf = io.BytesIO()
            im.save(buf, format="JPEG", quality=90)
            meta = {**meta, "id": key, "figure_id": fig_id, "article_id": article, "split": split,
                    "licence": "CC BY 4.0 (eLife sample, synthetic crops)"}
            samples.append((key, buf.getvalue(), meta))
        figures.append((split, samples))

    sizes: dict[str, int] = {}
    for split in SPLITS:
        figs = [s for sp, s in figures if sp == split]
        for k in range(0, len(figs), figures_per_shard):
            name = f"{split}-{k // figures_per_shard:06d}.tar"
            with wds.TarWriter(str(out_dir / name)) as tw:
                n = 0
                for samples in figs[k : k + figures_per_shard]:
                    for key, jpg, meta in samples:
                        tw.write({"__key__": key, "jpg": jpg, "txt": meta["text"].encode(), "json": json.dumps(meta).encode()})
                        n += 1
            sizes[name] = n
    (out_dir / "sizes.json").write_text(json.dumps(sizes, indent=1, sort_keys=True))
    return sizes


def iterate_split(data_dir, split, transform, tokenizer, batch_size, levels=LEVELS) -> Iterator[dict]:
    """All batches of a split in file order, no node split (evaluation on every rank)."""
    yield from make_pipeline(data_dir, split, transform, tokenizer, batch_size, levels,
                             split_by_node=False, partial=True)
