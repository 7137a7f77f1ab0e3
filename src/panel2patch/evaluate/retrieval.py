"""Retrieval Recall@K, image->text and text->image, per level (figure, panel, patch) of a pair set,
computed by clip_benchmark's ``zeroshot_retrieval.evaluate`` on the open_clip model.

Each pair's own text is its only positive (clip_benchmark's protocol with one caption per image).
Recall@K is reported for K < N only (with N pairs, R@N is 1 for any model); chance is K/N.
"""

from __future__ import annotations

import torch

from panel2patch.evaluate.common import Outcome, quiet_tqdm
from panel2patch.evaluate.datasets import PairSet

KS = (1, 5, 10)
LEVEL_ORDER = {"figure": 0, "panel": 1, "patch": 2}


class _Pairs(torch.utils.data.Dataset):
    def __init__(self, pairs, preprocess):
        self.pairs, self.preprocess = pairs, preprocess

    def __len__(self):
        return len(self.pairs)

    def __getitem__(self, i):
        p = self.pairs[i]
        return self.preprocess(p.image), p.text


def _collate(batch):
    return torch.stack([x for x, _ in batch]), [[t] for _, t in batch]  # one caption per image


def recall(model, pairs, ks=KS, batch_size: int = 64) -> dict[str, float]:
    """{"i2t_r1": ..., "t2i_r1": ...} for the ks below len(pairs), by clip_benchmark."""
    from clip_benchmark.metrics import zeroshot_retrieval

    ks = [k for k in ks if k < len(pairs)]
    loader = torch.utils.data.DataLoader(_Pairs(pairs, model.preprocess), batch_size=batch_size, collate_fn=_collate)
    with quiet_tqdm(zeroshot_retrieval):
        m = zeroshot_retrieval.evaluate(model.model, loader, model.tokenizer, "cpu", amp=False, recall_k_list=ks)
    out = {}
    for k in ks:  # clip_benchmark: "text retrieval" = image -> text
        out[f"i2t_r{k}"] = m[f"text_retrieval_recall@{k}"]
        out[f"t2i_r{k}"] = m[f"image_retrieval_recall@{k}"]
    return out


def run(models, pairsets: list[PairSet], batch_size: int = 64) -> Outcome:
    out = Outcome()
    for ps in pairsets:
        out.uses(ps.name, ps.sha256, ps.source, len(ps.pairs))
        levels = ps.by_level()
        if not levels:
            out.skip("retrieval", ps.name, "no pairs")
        for level in sorted(levels, key=lambda lv: LEVEL_ORDER.get(lv, 9)):
            pairs = levels[level]
            data = f"{ps.name}/{level}"
            if len(pairs) < 2:
                out.skip("retrieval", data, f"{len(pairs)} pair(s): retrieval needs 2 or more")
                continue
            per_model = {m.label: recall(m, pairs, batch_size=batch_size) for m in models}
            for metric in per_model[models[0].label]:
                k = int(metric.rsplit("_r", 1)[1])
                out.row("retrieval", data, f"{metric.replace('_r', ' R@')}", len(pairs),
                        {**{lab: v[metric] for lab, v in per_model.items()}, "chance": k / len(pairs)})
    return out
