"""Losses of granularity-aware pretraining.  Each is an ``nn.Module`` whose ``forward`` returns a
dict of named scalar losses (log each one; :class:`GranularityLoss` also returns the weighted
``"loss"`` to backpropagate).

* :class:`ClipLoss`: symmetric InfoNCE inside one level (figure M, panel P or patch R).
* :class:`CrossLevelLoss`: mean of a parent's children embeddings vs the parent embedding, image
  side and text side, CLIP-style over the parents in the batch (Panel2Patch).
* :class:`MGLLLoss`: soft multi-label CLIP + point-wise sigmoid BCE per text granularity, and a
  Jensen-Shannon-style consistency between the granularities' softmax distributions (MGLL).
* :class:`DiscriminationLoss`: pick the original caption among K meaning-breaking perturbations.
* :class:`GranularityLoss`: all of the above from one batch dict, weighted by a config dict.
* :func:`granularity_schedule`: which levels a step trains (``alternate`` M->P->R, or ``mix``).

Distributed: features (and ids) are all-gathered across ranks so that negatives span every GPU;
the local slice of the gathered tensor is the local tensor itself, so gradients flow through it
(open_clip's trick, ``gather_with_grad=False``).  Every rank then computes the loss over the
global batch, the same value on every rank; the gradient of a rank's own features equals the
single-process gradient of those rows.  Ranks may hold different numbers of rows (panels and
patches per figure vary): rows are padded for the collective and cut back.  Without an
initialised process group (or world size 1) nothing is gathered.

Ids (figure, panel, article, text ids) must be global int64 (e.g. a hash of the PMCID), not
positions within a rank's batch, since they are compared after gathering.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import torch
import torch.distributed as dist
import torch.nn.functional as F
from torch import nn

LEVELS = ("figure", "panel", "patch")  # M, P, R in Panel2Patch


# ------------------------------------------------------------------------------------ helpers
def world() -> tuple[int, int]:
    """(rank, world size); (0, 1) when torch.distributed is not initialised."""
    if dist.is_available() and dist.is_initialized():
        return dist.get_rank(), dist.get_world_size()
    return 0, 1


def gather_rows(x: torch.Tensor) -> torch.Tensor:
    """Concatenate ``x`` (n_r, ...) of every rank in rank order -> (sum n_r, ...).

    The local rows are ``x`` itself (gradients flow through them); other ranks' rows are
    constants.  Row counts may differ between ranks."""
    rank, size = world()
    if size == 1:
        return x
    n = torch.tensor([x.shape[0]], device=x.device, dtype=torch.long)
    counts = [torch.zeros_like(n) for _ in range(size)]
    dist.all_gather(counts, n)
    counts = [int(c.item()) for c in counts]
    top = max(counts)
    padded = x.detach()
    if x.shape[0] < top:
        padded = torch.cat([padded, padded.new_zeros((top - x.shape[0], *x.shape[1:]))])
    parts = [torch.empty_like(padded) for _ in range(size)]
    dist.all_gather(parts, padded.contiguous())
    parts = [p[:c] for p, c in zip(parts, counts)]
    parts[rank] = x
    return torch.cat(parts)


def check_finite(name: str, value: torch.Tensor) -> torch.Tensor:
    """Raise instead of letting a NaN/inf loss through (MGLL's public code silently drops them)."""
    if not torch.isfinite(value).all():
        raise FloatingPointError(f"{name} is not finite: {value.detach().cpu()}")
    return value


def clip_loss(image: torch.Tensor, text: torch.Tensor, logit_scale: torch.Tensor) -> torch.Tensor:
    """Symmetric cross-entropy of matched rows; image, text (N, D) L2-normalised."""
    logits = logit_scale * image @ text.T  # (N, N)
    labels = torch.arange(image.shape[0], device=image.device)
    return (F.cross_entropy(logits, labels) + F.cross_entropy(logits.T, labels)) / 2


def _zero(*tensors: torch.Tensor) -> torch.Tensor:
    """A 0 that keeps the graph (so every parameter still gets a gradient, as DDP wants)."""
    return sum(t.sum() * 0.0 for t in tensors)


def group_mean(x: torch.Tensor, group: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Mean of the rows of ``x`` (N, D) per value of ``group`` (N,) -> (G, D), unique ids (G,)."""
    ids, inverse = torch.unique(group, return_inverse=True)
    sums = x.new_zeros((ids.shape[0], x.shape[1])).index_add(0, inverse, x)
    counts = torch.bincount(inverse, minlength=ids.shape[0]).to(x.dtype).unsqueeze(1)
    return sums / counts, ids


# ------------------------------------------------------------------------------------- losses
class ClipLoss(nn.Module):
    """CLIP loss within one level over the global batch: ``{"clip": loss}``."""

    def forward(self, image: torch.Tensor, text: torch.Tensor, logit_scale: torch.Tensor) -> dict[str, torch.Tensor]:
        image, text = gather_rows(image), gather_rows(text)
        if image.shape[0] == 0:
            return {"clip": _zero(image, text, logit_scale)}
        return {"clip": check_finite("clip", clip_loss(image, text, logit_scale))}


class CrossLevelLoss(nn.Module):
    """Children (panels of a figure, patches of a panel) mean-pooled vs their parent.

    ``child_image/child_text`` (n, D) with ``child_parent`` (n,) the parent id of each child;
    ``parent_image/parent_text`` (m, D) with ``parent_id`` (m,).  Parents with no child in the
    (global) batch are left out; the pooled child embedding is re-normalised.  Returns
    ``{"image": ..., "text": ...}`` (CLIP loss over the parents, each side separately)."""

    def forward(
        self,
        child_image: torch.Tensor,
        child_text: torch.Tensor,
        child_parent: torch.Tensor,
        parent_image: torch.Tensor,
        parent_text: torch.Tensor,
        parent_id: torch.Tensor,
        logit_scale: torch.Tensor,
    ) -> dict[str, torch.Tensor]:
        c_img, c_txt, c_par = gather_rows(child_image), gather_rows(child_text), gather_rows(child_parent)
        p_img, p_txt, p_id = gather_rows(parent_image), gather_rows(parent_text), gather_rows(parent_id)
        # one row per parent id (first occurrence), restricted to parents that have children
        uniq, first = _first_occurrence(p_id)
        keep = torch.isin(uniq, c_par)
        uniq, first = uniq[keep], first[keep]
        if uniq.numel() == 0:
            zero = _zero(child_image, child_text, parent_image, parent_text, logit_scale)
            return {"image": zero, "text": zero}
        in_batch = torch.isin(c_par, uniq)
        mean_img, ids = group_mean(c_img[in_batch], c_par[in_batch])  # ids sorted, == uniq (sorted)
        mean_txt, _ = group_mean(c_txt[in_batch], c_par[in_batch])
        order = torch.searchsorted(ids, uniq)
        mean_img, mean_txt = F.normalize(mean_img[order], dim=-1), F.normalize(mean_txt[order], dim=-1)
        return {
            "image": check_finite("cross/image", clip_loss(mean_img, p_img[first], logit_scale)),
            "text": check_finite("cross/text", clip_loss(mean_txt, p_txt[first], logit_scale)),
        }


def _first_occurrence(ids: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Sorted unique ids and, for each, the index of its first row."""
    uniq, inverse = torch.unique(ids, return_inverse=True)
    pos = torch.arange(ids.shape[0], device=ids.device)
    first = torch.full((uniq.shape[0],), ids.shape[0], device=ids.device, dtype=torch.long)
    first = first.scatter_reduce(0, inverse, pos, reduce="amin")
    return uniq, first


def mgll_targets(ids: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Binary match matrix and row-normalised soft targets from sharing ids.

    ``ids`` (N,) or (K, N) int64: samples i and j are positives when they share ANY of the K id
    kinds (e.g. identical text, same figure, same article); -1 means "none" and never matches.
    A row with no valid id keeps only itself as positive.  Returns (match (N, N) float in {0, 1},
    targets (N, N) whose rows sum to 1)."""
    ids = ids.view(1, -1) if ids.dim() == 1 else ids
    valid = ids >= 0
    same = (ids.unsqueeze(2) == ids.unsqueeze(1)) & valid.unsqueeze(2) & valid.unsqueeze(1)  # (K, N, N)
    match = same.any(0)
    match = match | torch.eye(match.shape[0], dtype=torch.bool, device=match.device)
    match = match.float()
    return match, match / match.sum(1, keepdim=True)


def smooth_kl(probs: Sequence[torch.Tensor]) -> torch.Tensor:
    """Jensen-Shannon-style consistency: mean over g of KL(p_g || mean_g p_g), per row averaged.

    ``probs``: G tensors (N, M) of row distributions (softmax probabilities).  0 when all equal,
    > 0 otherwise, bounded by log G, finite even with zero entries (0 log 0 = 0)."""
    p = torch.stack(list(probs))  # (G, N, M)
    m = p.mean(0, keepdim=True)
    kl = (torch.xlogy(p, p) - torch.xlogy(p, m)).sum(-1)  # (G, N)
    return kl.mean()


class MGLLLoss(nn.Module):
    """Multi-granular language learning over one set of images.

    ``image`` (N, D); ``texts[g]`` (N, D): the text of each image at granularity g (e.g. a patch
    image's patch phrase, panel subcaption, figure caption); ``ids[g]`` (N,) or (K, N): sharing
    ids at g (see :func:`mgll_targets`).  Per granularity: soft cross-entropy image->text and
    text->image against the row-normalised targets, and sigmoid BCE of
    ``logit_scale * cos + logit_bias`` against the binary match matrix (mean over all pairs).
    Across granularities: :func:`smooth_kl` of the image->text softmax distributions, on
    L2-normalised features, scaled by the same temperature.

    Returns ``{"soft_ce/<g>", "bce/<g>", "kl"}`` (``kl`` only with two granularities or more)."""

    def forward(
        self,
        image: torch.Tensor,
        texts: Mapping[str, torch.Tensor],
        ids: Mapping[str, torch.Tensor],
        logit_scale: torch.Tensor,
        logit_bias: torch.Tensor | float = 0.0,
    ) -> dict[str, torch.Tensor]:
        image = F.normalize(gather_rows(image), dim=-1)
        out: dict[str, torch.Tensor] = {}
        probs = []
        for g, text in texts.items():
            text = F.normalize(gather_rows(text), dim=-1)
            gid = ids[g]
            gid = gather_rows(gid) if gid.dim() == 1 else gather_rows(gid.T).T
            match, target = mgll_targets(gid)
            logits = logit_scale * image @ text.T  # (N, N)
            soft_i2t = -(target * F.log_softmax(logits, dim=1)).sum(1).mean()
            soft_t2i = -(target * F.log_softmax(logits.T, dim=1)).sum(1).mean()  # match is symmetric
            out[f"soft_ce/{g}"] = check_finite(f"mgll/soft_ce/{g}", (soft_i2t + soft_t2i) / 2)
            bce = F.binary_cross_entropy_with_logits(logits + logit_bias, match)
            out[f"bce/{g}"] = check_finite(f"mgll/bce/{g}", bce)
            probs.append(F.softmax(logits, dim=1))
        if len(probs) > 1:
            out["kl"] = check_finite("mgll/kl", smooth_kl(probs))
        return out


class DiscriminationLoss(nn.Module):
    """Pick the original caption among K perturbed ones given the image (no gathering: the
    choices are per sample).  ``image`` (B, D); ``texts`` (B, 1 + K, D) with the original at 0.
    Returns ``{"discrimination": cross-entropy}``."""

    def forward(self, image: torch.Tensor, texts: torch.Tensor, logit_scale: torch.Tensor) -> dict[str, torch.Tensor]:
        if image.shape[0] == 0:
            return {"discrimination": _zero(image, texts, logit_scale)}
        image, texts = F.normalize(image, dim=-1), F.normalize(texts, dim=-1)
        logits = logit_scale * torch.einsum("bd,bkd->bk", image, texts)  # (B, 1 + K)
        target = torch.zeros(image.shape[0], dtype=torch.long, device=image.device)
        return {"discrimination": check_finite("discrimination", F.cross_entropy(logits, target))}


# ----------------------------------------------------------------------------------- combined
DEFAULT_WEIGHTS = {
    "clip": 1.0,  # per level; "clip/<level>" keys override
    "cross": 0.5,  # child-mean vs parent, image and text side
    "mgll": 0.5,  # soft CE + BCE per granularity
    "mgll_kl": 0.1,  # cross-granularity consistency
    "discrimination": 0.2,
}


class GranularityLoss(nn.Module):
    """Everything from one batch dict, weighted by ``cfg["weights"]`` (a dict; missing keys take
    :data:`DEFAULT_WEIGHTS`; weight 0 skips the term).

    ``batch`` (features L2-normalised, ids int64 and global; every key optional)::

        {"figure": {"image": (n, D), "text": (n, D), "id": (n,)},
         "panel":  {"image": ..., "text": ..., "id": (n,), "parent_id": (n,)},   # figure id
         "patch":  {"image": ..., "text": ..., "id": (n,), "parent_id": (n,)},   # panel id
         "mgll": {"image": (N, D), "texts": {g: (N, D)}, "ids": {g: (N,) | (K, N)}},
         "discrimination": {"image": (B, D), "texts": (B, 1 + K, D)}}

    Returns ``{"loss": weighted total, "clip/figure": ..., "cross/panel/image": ...,
    "mgll/soft_ce/<g>": ..., "mgll/bce/<g>": ..., "mgll/kl": ..., "discrimination": ...}``;
    the parts are unweighted and only those the batch allows are present."""

    def __init__(self, cfg: Mapping | None = None):
        super().__init__()
        cfg = dict(cfg or {})
        self.weights = {**DEFAULT_WEIGHTS, **dict(cfg.get("weights", {}))}
        unknown = set(self.weights) - set(DEFAULT_WEIGHTS) - {f"clip/{lvl}" for lvl in LEVELS}
        if unknown:
            raise ValueError(f"unknown loss weights {sorted(unknown)}")
        self.clip = ClipLoss()
        self.cross = CrossLevelLoss()
        self.mgll = MGLLLoss()
        self.discrimination = DiscriminationLoss()

    def weight(self, name: str) -> float:
        if name.startswith("clip/"):
            return float(self.weights.get(name, self.weights["clip"]))
        if name.startswith("cross/"):
            return float(self.weights["cross"])
        if name == "mgll/kl":
            return float(self.weights["mgll_kl"])
        if name.startswith("mgll/"):
            return float(self.weights["mgll"])
        return float(self.weights[name])

    def forward(self, batch: Mapping, logit_scale: torch.Tensor, logit_bias: torch.Tensor | float = 0.0) -> dict:
        parts: dict[str, torch.Tensor] = {}
        for level in LEVELS:
            if level in batch and self.weight(f"clip/{level}") > 0:
                b = batch[level]
                parts[f"clip/{level}"] = self.clip(b["image"], b["text"], logit_scale)["clip"]
        if self.weights["cross"] > 0:
            for child, parent in (("panel", "figure"), ("patch", "panel")):
                if child in batch and parent in batch and "parent_id" in batch[child]:
                    c, p = batch[child], batch[parent]
                    res = self.cross(c["image"], c["text"], c["parent_id"], p["image"], p["text"], p["id"], logit_scale)
                    parts.update({f"cross/{child}/{side}": v for side, v in res.items()})
        if "mgll" in batch and (self.weights["mgll"] > 0 or self.weights["mgll_kl"] > 0):
            b = batch["mgll"]
            res = self.mgll(b["image"], b["texts"], b["ids"], logit_scale, logit_bias)
            parts.update({f"mgll/{k}": v for k, v in res.items()})
        if "discrimination" in batch and self.weights["discrimination"] > 0:
            b = batch["discrimination"]
            parts.update(self.discrimination(b["image"], b["texts"], logit_scale))
        if not parts:
            raise ValueError(f"nothing to compute from batch keys {sorted(batch)}")
        total = sum(self.weight(k) * v for k, v in parts.items())
        return {"loss": check_finite("loss", total), **parts}


def granularity_schedule(mode: str, step: int, levels: Sequence[str] = LEVELS) -> list[str]:
    """Levels trained at ``step``: ``alternate`` cycles one level per step (M -> P -> R, as
    Panel2Patch); ``mix`` trains all levels every step."""
    if mode == "alternate":
        return [levels[step % len(levels)]]
    if mode == "mix":
        return list(levels)
    raise ValueError(f"granularity schedule {mode!r}: expected 'alternate' or 'mix'")

