"""Benchmark data, read from disk as it is (nothing is downloaded): image-text pairs and
classification / VQA sets, each with the sha256 of the files it was read from.

Pairs (retrieval, grounding, perturbed-report test)::

    corpus_pairs(shards_dir, split)   our corpus: WebDataset shards <split>-*.tar (+ sizes.json)
    read_pairs(path)                  user pairs: a folder of WebDataset .tar shards, one .tar, or a
                                      CSV / JSONL with an image column (image, filepath, path) and a
                                      text column (text, caption, title); image paths relative to the file

Classification sets (zero-shot and linear probe; ``train`` may be empty: zero-shot only)::

    vqa_rad_organ(root), vqa_rad_modality(root)   VQA-RAD (CC0): organ CHEST/ABD/HEAD of every
                                      image; imaging modality CT/MRI/X-ray from the MODALITY questions
    read_classification(path)         an image folder (<root>/<class>/*.png, or <root>/{train,test}/<class>/),
                                      a CSV (image, label[, split]) or a MedMNIST .npz (train_/test_images,
                                      _labels; class names from a sidecar <file>.json {"label": {"0": name}}
                                      as MedMNIST's INFO, else zero-shot is skipped)

VQA-RAD's split is by question and every test image also has training questions, so the
image-level sets here take the images of ``testset.json`` as test and the images only in
``trainset.json`` as train (disjoint images); closed yes/no VQA keeps the questions' own split.
"""

from __future__ import annotations

import csv
import hashlib
import io
import json
import re
import tarfile
from collections import Counter, defaultdict
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

from PIL import Image

IMAGE_EXT = (".jpg", ".jpeg", ".png", ".bmp", ".tif", ".tiff", ".webp")


# ------------------------------------------------------------------------------------ digests
def digest_files(paths: Sequence[str | Path], root: str | Path | None = None) -> str:
    """One sha256 over files: sorted ``<name> <sha256>`` lines (name relative to ``root``)."""
    from panel2patch.digest import sha256_path

    lines = []
    for p in sorted({Path(p) for p in paths}):
        name = p.relative_to(root).as_posix() if root and p.is_relative_to(root) else p.name
        lines.append(f"{name} {sha256_path(p)}")
    return hashlib.sha256("\n".join(lines).encode()).hexdigest()


def _open(path_or_bytes) -> Image.Image:
    src = io.BytesIO(path_or_bytes) if isinstance(path_or_bytes, bytes) else path_or_bytes
    with Image.open(src) as im:
        return im.convert("RGB")


# --------------------------------------------------------------------------------------- pairs
@dataclass
class Pair:
    image: Image.Image
    text: str
    meta: dict = field(default_factory=dict)

    @property
    def level(self) -> str:
        return self.meta.get("level") or "pair"


@dataclass
class PairSet:
    name: str
    pairs: list[Pair]
    sha256: str
    source: str

    def by_level(self) -> dict[str, list[Pair]]:
        out: dict[str, list[Pair]] = defaultdict(list)
        for p in self.pairs:
            out[p.level].append(p)
        return dict(out)


def _tar_samples(path: Path):
    """Samples of one WebDataset tar: {"__key__", "<ext>": bytes} grouped by key (file order)."""
    cur, key = {}, None
    with tarfile.open(path) as tar:
        for m in tar:
            if not m.isfile():
                continue
            base = m.name.rsplit("/", 1)[-1]
            k, _, ext = base.partition(".")
            if k != key and cur:
                yield cur
                cur = {}
            key = k
            cur["__key__"] = k
            cur[ext.lower()] = tar.extractfile(m).read()
    if cur:
        yield cur


def _pairs_from_tars(tars: Sequence[Path]) -> list[Pair]:
    out = []
    for t in tars:
        for s in _tar_samples(t):
            raw = next((s[e] for e in ("jpg", "jpeg", "png", "webp") if e in s), None)
            if raw is None:
                continue
            meta = json.loads(s["json"]) if "json" in s else {}
            text = meta.get("text") or (s.get("txt") or b"").decode("utf-8").strip()
            if not text:
                continue
            meta.setdefault("id", s["__key__"])
            out.append(Pair(_open(raw), text, meta))
    return out


def corpus_pairs(shards_dir: str | Path, split: str = "test") -> PairSet:
    """The ``split`` pairs of a corpus shard folder (all levels, file order)."""
    shards_dir = Path(shards_dir)
    if not shards_dir.is_dir():
        raise FileNotFoundError(f"{shards_dir}: no such corpus shard folder")
    tars = sorted(shards_dir.glob(f"{split}-*.tar"))
    pairs = _pairs_from_tars(tars)
    return PairSet(f"corpus-{split}", pairs, digest_files(tars, shards_dir) if tars else hashlib.sha256(b"").hexdigest(),
                   str(shards_dir))


def read_pairs(path: str | Path) -> PairSet:
    """User pairs: WebDataset tar(s) or a CSV / JSONL of image + text (see the module docstring)."""
    path = Path(path)
    if path.is_dir():
        tars = sorted(path.glob("*.tar"))
        if not tars:
            raise FileNotFoundError(f"{path}: no .tar shards in the folder")
        return PairSet(path.name, _pairs_from_tars(tars), digest_files(tars, path), str(path))
    if not path.is_file():
        raise FileNotFoundError(f"{path}: no such pairs file or folder")
    if path.suffix == ".tar":
        return PairSet(path.stem, _pairs_from_tars([path]), digest_files([path]), str(path))
    rows = _read_rows(path)
    pairs, files = [], [path]
    for i, r in enumerate(rows):
        img = _field(r, ("image", "filepath", "path", "image_path"), path, i)
        text = _field(r, ("text", "caption", "title"), path, i)
        ip = (path.parent / img).resolve() if not Path(img).is_absolute() else Path(img)
        if not ip.is_file():
            raise FileNotFoundError(f"{path}: row {i + 1}: image {img} not found")
        files.append(ip)
        pairs.append(Pair(_open(ip), str(text), {"id": str(r.get("id", i)), "level": r.get("level") or "pair"}))
    if not pairs:
        raise ValueError(f"{path}: no pairs")
    return PairSet(path.stem, pairs, digest_files(files, path.parent), str(path))


def _read_rows(path: Path) -> list[dict]:
    if path.suffix in (".jsonl", ".json"):
        lines = [ln for ln in path.read_text(encoding="utf-8").splitlines() if ln.strip()]
        try:
            return [json.loads(ln) for ln in lines]
        except json.JSONDecodeError as exc:
            raise ValueError(f"{path}: not JSON lines ({exc})") from None
    if path.suffix in (".csv", ".tsv"):
        with open(path, newline="", encoding="utf-8") as fh:
            return list(csv.DictReader(fh, delimiter="\t" if path.suffix == ".tsv" else ","))
    raise ValueError(f"{path}: expected a .csv, .tsv, .jsonl or .tar file or a folder of .tar shards")


def _field(row: dict, names: Sequence[str], path: Path, i: int):
    for n in names:
        if row.get(n) not in (None, ""):
            return row[n]
    raise ValueError(f"{path}: row {i + 1} has none of the columns {list(names)}")


# ------------------------------------------------------------------------------ classification
@dataclass
class ClassSet:
    """Images with one label each; ``classnames`` (None: no names, zero-shot skipped),
    ``train``/``test`` lists of (PIL image, class index); prompt ``templates`` with ``{c}``."""

    name: str
    classnames: list[str] | None
    train: list[tuple[Image.Image, int]]
    test: list[tuple[Image.Image, int]]
    sha256: str
    source: str
    templates: list[str] = field(default_factory=lambda: list(GENERIC_TEMPLATES))
    note: str = ""


GENERIC_TEMPLATES = ["a photo of {c}.", "an image of {c}.", "{c}.", "a medical image showing {c}."]

# VQA-RAD classes: label in the data -> name in the prompts
ORGANS = {"CHEST": "chest", "ABD": "abdomen", "HEAD": "head"}
ORGAN_TEMPLATES = ["a radiology image of the {c}.", "a medical image of the {c}.", "a scan of the {c}.",
                   "an image of the patient's {c}.", "{c}."]
MODALITIES = {"CT": "CT scan", "MRI": "MRI scan", "X-ray": "X-ray radiograph"}
MODALITY_TEMPLATES = ["a {c}.", "a {c} image.", "this is a {c}.", "a radiology {c}.", "a medical {c}."]
# an answer or a yes-question naming exactly one of these is read as that modality
_MODALITY_RE = {
    "CT": r"\bct\b|\bcta\b|computed tomography",
    "MRI": r"\bmri?\b|\bmra\b|flair|\bt1\b|\bt2\b|\bdwi\b|\badc\b|diffusion",
    "X-ray": r"x-?\s?ray|xray|radiograph|plain film|\bxr\b|\bcxr\b|\bpa\b",
}


def vqa_rad_dir(root: str | Path) -> Path:
    """The folder holding trainset.json, testset.json and images/ (``root`` or ``root/data_RAD``)."""
    root = Path(root)
    for cand in (root, root / "data_RAD"):
        if (cand / "trainset.json").is_file() and (cand / "testset.json").is_file() and (cand / "images").is_dir():
            return cand
    raise FileNotFoundError(f"{root}: not a VQA-RAD folder (trainset.json, testset.json, images/, or data_RAD/ with them)")


def _vqa_rad(root) -> tuple[Path, list[dict], list[dict]]:
    d = vqa_rad_dir(root)
    return d, json.loads((d / "trainset.json").read_text()), json.loads((d / "testset.json").read_text())


def _vqa_rad_digest(d: Path, images: Sequence[str]) -> str:
    return digest_files([d / "trainset.json", d / "testset.json", *(d / "images" / n for n in images)], d)


def modality_of(question: str, answer) -> str | None:
    """The modality a MODALITY question-answer states, or None (negated questions, "or"
    questions, "no" answers, answers naming none or several)."""
    q, a = question.lower(), str(answer).lower().strip()
    if " not " in f" {q} ":
        return None

    def named(s):
        return [m for m, pat in _MODALITY_RE.items() if re.search(pat, s)]

    if a in ("yes", "no"):
        m = named(q)
        return m[0] if a == "yes" and len(m) == 1 and " or " not in q else None
    m = named(a)
    return m[0] if len(m) == 1 else None


def _image_split(train_qa, test_qa, labels: dict[str, str], classes: Sequence[str], d: Path):
    test_imgs = {x["image_name"] for x in test_qa}
    train, test = [], []
    for name in sorted(labels):
        item = (_open(d / "images" / name), list(classes).index(labels[name]))
        (test if name in test_imgs else train).append(item)
    return train, test


def vqa_rad_organ(root) -> ClassSet:
    d, tr, te = _vqa_rad(root)
    organs: dict[str, Counter] = defaultdict(Counter)
    for x in tr + te:
        organs[x["image_name"]][x["image_organ"].strip()] += 1
    labels = {k: v.most_common(1)[0][0] for k, v in organs.items() if v.most_common(1)[0][0] in ORGANS}
    train, test = _image_split(tr, te, labels, list(ORGANS), d)
    return ClassSet("vqa-rad-organ", list(ORGANS.values()), train, test, _vqa_rad_digest(d, labels), str(d),
                    ORGAN_TEMPLATES, "organ of every image; test = images of testset.json, train = the others")


def vqa_rad_modality(root) -> ClassSet:
    d, tr, te = _vqa_rad(root)
    stated: dict[str, set] = defaultdict(set)
    for x in tr + te:
        if "MODALITY" in x.get("question_type", ""):
            m = modality_of(x["question"], x["answer"])
            if m:
                stated[x["image_name"]].add(m)
    labels = {k: next(iter(v)) for k, v in stated.items() if len(v) == 1}  # images stated two ways are left out
    train, test = _image_split(tr, te, labels, list(MODALITIES), d)
    return ClassSet("vqa-rad-modality", list(MODALITIES.values()), train, test, _vqa_rad_digest(d, labels), str(d),
                    MODALITY_TEMPLATES, f"{len(labels)} images whose MODALITY questions state one of CT/MRI/X-ray")


@dataclass
class VQASet:
    """Closed yes/no questions: (image, question, 1 for yes) per split."""

    name: str
    train: list[tuple[Image.Image, str, int]]
    test: list[tuple[Image.Image, str, int]]
    sha256: str
    source: str


def vqa_rad_yesno(root) -> VQASet:
    d, tr, te = _vqa_rad(root)
    cache: dict[str, Image.Image] = {}

    def rows(qa):
        out = []
        for x in qa:
            a = str(x["answer"]).lower().strip()
            if x.get("answer_type", "").strip() != "CLOSED" or a not in ("yes", "no"):
                continue
            name = x["image_name"]
            if name not in cache:
                cache[name] = _open(d / "images" / name)
            out.append((cache[name], x["question"], int(a == "yes")))
        return out

    train, test = rows(tr), rows(te)
    return VQASet("vqa-rad-yesno", train, test, _vqa_rad_digest(d, sorted(cache)), str(d))


def read_classification(path: str | Path) -> ClassSet:
    """A user's classification set (see the module docstring)."""
    path = Path(path)
    if path.is_dir():
        return _image_folder(path)
    if not path.is_file():
        raise FileNotFoundError(f"{path}: no such dataset file or folder")
    if path.suffix == ".npz":
        return _medmnist(path)
    if path.suffix in (".csv", ".tsv"):
        return _class_csv(path)
    raise ValueError(f"{path}: expected an image folder, a .csv/.tsv or a MedMNIST .npz")


def _image_folder(root: Path) -> ClassSet:
    splits = {s: root / s for s in ("train", "test") if (root / s).is_dir()}
    if "test" not in splits:
        splits = {"test": root}
    classes = sorted({c.name for d in splits.values() for c in d.iterdir() if c.is_dir()})
    if not classes:
        raise ValueError(f"{root}: no class folders (<root>/<class>/*.png or <root>/{{train,test}}/<class>/)")
    data, files = {"train": [], "test": []}, []
    for split, d in splits.items():
        for ci, c in enumerate(classes):
            for f in sorted((d / c).glob("*")) if (d / c).is_dir() else []:
                if f.suffix.lower() in IMAGE_EXT:
                    data[split].append((_open(f), ci))
                    files.append(f)
    if not data["test"]:
        raise ValueError(f"{root}: no images")
    return ClassSet(root.name, [c.replace("_", " ") for c in classes], data["train"], data["test"],
                    digest_files(files, root), str(root))


def _class_csv(path: Path) -> ClassSet:
    rows = _read_rows(path)
    labels = sorted({str(_field(r, ("label", "class"), path, i)) for i, r in enumerate(rows)})
    data, files = {"train": [], "test": []}, [path]
    for i, r in enumerate(rows):
        img = Path(_field(r, ("image", "filepath", "path", "image_path"), path, i))
        ip = img if img.is_absolute() else path.parent / img
        if not ip.is_file():
            raise FileNotFoundError(f"{path}: row {i + 1}: image {img} not found")
        split = (r.get("split") or "test").strip().lower()
        if split not in data:
            raise ValueError(f"{path}: row {i + 1}: split {split!r} (expected train or test)")
        data[split].append((_open(ip), labels.index(str(_field(r, ("label", "class"), path, i)))))
        files.append(ip)
    return ClassSet(path.stem, labels, data["train"], data["test"], digest_files(files, path.parent), str(path))


def _medmnist(path: Path) -> ClassSet:
    import numpy as np

    z = np.load(path)
    need = {"train_images", "train_labels", "test_images", "test_labels"}
    if not need <= set(z.files):
        raise ValueError(f"{path}: a MedMNIST .npz has {sorted(need)}; this one has {sorted(z.files)}")

    def items(split):
        imgs, labels = z[f"{split}_images"], z[f"{split}_labels"]
        if labels.ndim == 2 and labels.shape[1] > 1:
            raise ValueError(f"{path}: multi-label sets (e.g. ChestMNIST) are not supported")
        return [(Image.fromarray(im).convert("RGB"), int(y)) for im, y in zip(imgs, labels.reshape(-1))]

    side = path.with_suffix(".json")
    names = None
    if side.is_file():
        info = json.loads(side.read_text())
        lab = info.get("label", info)
        names = [lab[str(i)] for i in range(len(lab))]
    files = [path] + ([side] if side.is_file() else [])
    return ClassSet(path.stem, names, items("train"), items("test"), digest_files(files, path.parent), str(path),
                    note="" if names else f"no class names ({side.name}): zero-shot skipped")
