"""Retrieval recall@K per level (figure, panel, patch), image->text and text->image.

Each pair's own text is its only positive (duplicated texts count as misses, as in the usual
PMC-OA/ROCO protocol).  Every rank embeds the whole split (``split_by_node=False``): ZeRO-3
needs all ranks in each forward; rank 0 logs.  Metrics are named ``val/<level>/i2t_r1`` ...
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Sequence

import torch

from panel2patch.train.data import LEVELS

KS = (1, 5, 10)


def recall_at_k(image: torch.Tensor, text: torch.Tensor, ks: Sequence[int] = KS) -> dict[str, float]:
    """image, text (N, D) L2-normalised, row i of each a pair -> {"i2t_r1": ..., "t2i_r1": ...}."""
    sim = image.float() @ text.float().T  # (N, N)
    target = torch.arange(sim.shape[0])
    out = {}
    for name, s in (("i2t", sim), ("t2i", sim.T)):
        # rank of the true match: how many candidates score strictly higher
        true = s[target, target].unsqueeze(1)
        rank = (s > true).sum(1)
        for k in ks:
            out[f"{name}_r{k}"] = (rank < k).float().mean().item()
    return out


@torch.no_grad()
def embed_batches(encode: Callable, batches: Iterable[dict], levels: Sequence[str] = LEVELS) -> dict:
    """``encode(images, ids) -> (image_features, text_features)`` over batches -> per level
    {"image": (N, D), "text": (N, D)} (levels with no pair are left out)."""
    feats = {lvl: ([], []) for lvl in levels}
    for batch in batches:
        for lvl in levels:
            b = batch.get(lvl)
            if b is None or b["image"].shape[0] == 0:
                continue
            img, txt = encode(b["image"], b["ids"])
            feats[lvl][0].append(img.float().cpu())
            feats[lvl][1].append(txt.float().cpu())
    return {lvl: {"image": torch.cat(i), "text": torch.cat(t)} for lvl, (i, t) in feats.items() if i}


def evaluate(encode: Callable, batches: Iterable[dict], levels: Sequence[str] = LEVELS, ks=KS) -> dict[str, float]:
    """{"val/<level>/i2t_r1": ..., "val/<level>/n": pairs} for every level present."""
    out = {}
    for lvl, f in embed_batches(encode, batches, levels).items():
        out.update({f"val/{lvl}/{k}": v for k, v in recall_at_k(f["image"], f["text"], ks).items()})
        out[f"val/{lvl}/n"] = float(f["image"].shape[0])
    return out
