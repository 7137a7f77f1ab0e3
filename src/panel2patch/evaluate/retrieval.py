"""Retrieval Recall@K, image->text and text->image, per level (figure, panel, patch) of a pair set,
computed by clip_benchmark's ``zeroshot_retrieval.evaluate`` on the open_clip model.

Each pair's own text is its only positive (clip_benchmark's protocol with one caption per image).
Recall@K is reported for K < N only (with N pairs, R@N is 1 for any model); chance is K/N.
Each row also holds the per-query hits (1/0: the pair's own text, or image, in the top K) that
clip_benchmark averages, captured from its own computation (:func:`_captured`), for paired tests.
"""

from __future__ import annotations

import contextlib

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


@contextlib.contextmanager
def _captured(module):
    """Record every per-query tensor clip_benchmark's ``batchify`` returns (its evaluate calls it
    for image retrieval (per text) then text retrieval (per image), once per K)."""
    seen, original = [], module.batchify

    def recording(*args, **kwargs):
        seen.append(original(*args, **kwargs))
        return seen[-1]

    module.batchify = recording
    try:
        yield seen
    finally:
        module.batchify = original


def recall_items(model, pairs, ks=KS, batch_size: int = 64) -> tuple[dict[str, float], dict[str, list[float]]]:
    """({"i2t_r1": ..., "t2i_r1": ...}, {"i2t_r1": [hit per query], ...}) for the ks below
    len(pairs), by clip_benchmark; each list's mean is its value."""
    from clip_benchmark.metrics import zeroshot_retrieval

    ks = [k for k in ks if k < len(pairs)]
    loader = torch.utils.data.DataLoader(_Pairs(pairs, model.preprocess), batch_size=batch_size, collate_fn=_collate)
    with quiet_tqdm(zeroshot_retrieval), _captured(zeroshot_retrieval) as seen:
        m = zeroshot_retrieval.evaluate(model.model, loader, model.tokenizer, "cpu", amp=False, recall_k_list=ks)
    out, items = {}, {}
    for i, k in enumerate(ks):  # clip_benchmark: "text retrieval" = image -> text
        out[f"i2t_r{k}"] = m[f"text_retrieval_recall@{k}"]
        out[f"t2i_r{k}"] = m[f"image_retrieval_recall@{k}"]
        items[f"t2i_r{k}"] = (seen[2 * i] > 0).float().tolist()
        items[f"i2t_r{k}"] = (seen[2 * i + 1] > 0).float().tolist()
    return out, items


def recall(model, pairs, ks=KS, batch_size: int = 64) -> dict[str, float]:
    """{"i2t_r1": ..., "t2i_r1": ...} for the ks below len(pairs), by clip_benchmark."""
    return recall_items(model, pairs, ks, batch_size)[0]


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
            per_model = {m.label: recall_items(m, pairs, batch_size=batch_size) for m in models}
            for metric in per_model[models[0].label][0]:
                k = int(metric.rsplit("_r", 1)[1])
                out.row("retrieval", data, f"{metric.replace('_r', ' R@')}", len(pairs),
                        {**{lab: v[metric] for lab, (v, _) in per_model.items()}, "chance": k / len(pairs)},
                        items={lab: it[metric] for lab, (_, it) in per_model.items()})
    return out
