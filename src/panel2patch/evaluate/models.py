"""Any open_clip model on disk -> one object the benchmarks use, and its untrained baseline.

A model spec (``panel2patch evaluate MODEL``) is one of::

    results/train/tiny/final            a folder with open_clip_config.json (our export, an open_clip
    local-dir:/models/biomedclip         hub folder downloaded by hand, ...): open_clip's local-dir:
    ViT-B-16@/models/pmc_clip.pt         an open_clip architecture name + a checkpoint file
    hf-hub:org/repo                      open_clip's hub loader (needs the network or its cache)

Everything is loaded with open_clip's own ``create_model_and_transforms`` / ``get_tokenizer``, so
every checkpoint goes through the same code and gives a side-by-side table.

The untrained baseline (:func:`untrained`) is the same architecture before training:

* our export inside a training output folder (``<run>/final`` beside ``<run>/run_config.yaml``):
  exactly the trainer's step-0 model, ``torch.manual_seed(seed); build_model(model, init)`` with
  the run config's ``model``, ``init`` (random or MiniLM text tower) and ``seed``, saved as an
  open_clip folder and loaded like any other model;
* any other spec: open_clip's own init of the architecture (``load_weights=False``, no
  pretrained towers) under ``torch.manual_seed(seed)``.
"""

from __future__ import annotations

import hashlib
import logging
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import torch
import torch.nn.functional as F

from panel2patch.digest import sha256_file

log = logging.getLogger(__name__)

CONFIG_FILE = "open_clip_config.json"
WEIGHT_FILES = ("open_clip_model.safetensors", "open_clip_pytorch_model.bin", "model.safetensors", "pytorch_model.bin")


@dataclass
class EvalModel:
    """A loaded model: open_clip ``model`` (eval, CPU), its ``preprocess`` (PIL -> tensor) and
    ``tokenizer``; ``digest`` identifies the weights (sha256 of the weights file when there is
    one, else of the tensors), ``init`` says where they came from."""

    label: str  # column name in the tables: "model", "untrained", or the spec for several models
    spec: str
    model: torch.nn.Module
    preprocess: Callable
    tokenizer: Callable
    digest: str
    init: str
    info: dict = field(default_factory=dict)

    @torch.no_grad()
    def encode_images(self, images: Sequence, batch_size: int = 64) -> torch.Tensor:
        """PIL images -> (N, D) L2-normalised float features."""
        out = []
        for i in range(0, len(images), batch_size):
            x = torch.stack([self.preprocess(im) for im in images[i : i + batch_size]])
            out.append(F.normalize(self.model.encode_image(x).float(), dim=-1))
        return torch.cat(out) if out else torch.zeros(0, 1)

    @torch.no_grad()
    def encode_texts(self, texts: Sequence[str], batch_size: int = 256) -> torch.Tensor:
        """Texts -> (N, D) L2-normalised float features."""
        out = []
        for i in range(0, len(texts), batch_size):
            out.append(F.normalize(self.model.encode_text(self.tokenizer(list(texts[i : i + batch_size]))).float(), dim=-1))
        return torch.cat(out) if out else torch.zeros(0, 1)


def state_digest(model: torch.nn.Module) -> str:
    """sha256 over the state dict's names, shapes and bytes (a model with no weights file)."""
    h = hashlib.sha256()
    for name, t in sorted(model.state_dict().items()):
        t = t.detach().cpu().contiguous()
        h.update(f"{name} {tuple(t.shape)} {t.dtype}\n".encode())
        h.update(t.view(torch.uint8).numpy().tobytes() if t.numel() else b"")
    return h.hexdigest()


def parse_spec(spec: str) -> tuple[str, str | None, Path | None]:
    """``spec`` -> (open_clip model name, pretrained file or None, local folder or None).
    Raises FileNotFoundError for a path that is not there."""
    if spec.startswith("local-dir:"):
        folder = Path(spec[len("local-dir:"):]).expanduser()
        if not (folder / CONFIG_FILE).is_file():
            raise FileNotFoundError(f"{folder}: no {CONFIG_FILE} (not an open_clip model folder)")
        return f"local-dir:{folder}", None, folder
    if spec.startswith("hf-hub:"):
        return spec, None, None
    if "@" in spec:
        name, _, weights = spec.partition("@")
        path = Path(weights).expanduser()
        if not path.is_file():
            raise FileNotFoundError(f"{spec}: checkpoint {path} not found")
        return name, str(path), None
    path = Path(spec).expanduser()
    if path.is_dir():
        if not (path / CONFIG_FILE).is_file():
            raise FileNotFoundError(f"{path}: no {CONFIG_FILE} (not an open_clip model folder; "
                                    "for a checkpoint file use ARCH@FILE, e.g. ViT-B-16@model.pt)")
        return f"local-dir:{path}", None, path
    if path.exists() or "/" in spec or spec.endswith((".pt", ".bin", ".safetensors")):
        raise FileNotFoundError(f"{spec}: no such model folder (a checkpoint file needs its architecture: ARCH@FILE)")
    import open_clip

    if spec not in open_clip.list_models():
        raise FileNotFoundError(f"{spec}: neither a model folder nor an open_clip architecture name")
    return spec, None, None


def _check_text_dir(folder: Path) -> None:
    """Our export names its text tower by absolute path (open_clip's requirement): a moved or
    copied folder whose path is stale is refused with the fix (the folder is never rewritten
    here: its sha256 is part of the training run's lineage)."""
    import json

    text = json.loads((folder / CONFIG_FILE).read_text()).get("model_cfg", {}).get("text_cfg", {})
    name = text.get("hf_model_name")
    if name and name.startswith("/") and not (Path(name) / "config.json").is_file():
        raise FileNotFoundError(f"{folder}: its text tower points at {name}, which is gone (a moved folder?); run "
                                f"python -c \"from panel2patch.model import repoint_open_clip_folder as r; r('{folder}')\"")


def load(spec: str, label: str = "model") -> EvalModel:
    """Load a model spec (see the module docstring) with open_clip, in eval mode on the CPU."""
    import open_clip

    name, pretrained, folder = parse_spec(spec)
    if folder is not None:
        _check_text_dir(folder)
    model, _, preprocess = open_clip.create_model_and_transforms(name, pretrained=pretrained)
    tokenizer = open_clip.get_tokenizer(name)
    if folder is not None:
        weights = next((folder / n for n in WEIGHT_FILES if (folder / n).is_file()), None)
        digest = sha256_file(weights) if weights else state_digest(model)
    elif pretrained:
        digest = sha256_file(pretrained)
    else:
        digest = state_digest(model)
    return EvalModel(label, spec, model.eval(), preprocess, tokenizer, digest, init="trained weights")


def run_config_of(spec: str) -> Path | None:
    """The training run config beside an exported folder (``<run>/final`` -> ``<run>/run_config.yaml``)."""
    _, _, folder = parse_spec(spec)
    if folder is None:
        return None
    cand = folder.resolve().parent / "run_config.yaml"
    return cand if cand.is_file() else None


def untrained(spec: str, out_dir: str | Path, seed: int = 0, label: str = "untrained") -> EvalModel:
    """The model of ``spec`` before training (see the module docstring); our step-0 model is
    written to ``out_dir`` as an open_clip folder and loaded from there."""
    import open_clip
    import yaml

    run_config = run_config_of(spec)
    if run_config is not None:
        from panel2patch.model.clip import build_model

        cfg = yaml.safe_load(run_config.read_text())
        seed = int(cfg.get("seed", seed))
        torch.manual_seed(seed)  # as panel2patch.train.main builds its model
        ours = build_model(cfg["model"], init=cfg.get("init", "random"))
        out_dir = Path(out_dir)
        from transformers.utils import logging as hf_logging

        hf_logging.disable_progress_bar()  # save_pretrained's "Writing model shards" bar
        ours.save_pretrained(out_dir)
        m = load(str(out_dir), label=label)
        m.spec, m.init = str(out_dir), f"step 0 of {run_config}: model {cfg['model']}, init {cfg.get('init', 'random')}, seed {seed}"
        m.info = {"run_config": str(run_config), "seed": seed, "run_init": cfg.get("init", "random"), "arch": cfg["model"]}
        return m
    name, _, folder = parse_spec(spec)
    if folder is not None:
        _check_text_dir(folder)
    torch.manual_seed(seed)
    model, _, preprocess = open_clip.create_model_and_transforms(name, pretrained=None, load_weights=False,
                                                                 pretrained_text=False, pretrained_image=False)
    return EvalModel(label, f"{spec} (random init)", model.eval(), preprocess, open_clip.get_tokenizer(name),
                     state_digest(model), init=f"open_clip random init, seed {seed}", info={"seed": seed})
