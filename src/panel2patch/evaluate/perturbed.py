"""Perturbed report discrimination (arXiv 2506.01902) as a test: for each image, pick its original
text among the original and K meaning-breaking perturbations of it (the trainer's own
:func:`panel2patch.train.perturb.perturb`, seeded), by the cosine of image and text embeddings.
Accuracy per level; ``chance`` = 1 / (K + 1).  A text that admits fewer than K perturbations
(a single word) is left out.  Ties (a perturbation beyond the text tower's context length
leaves the embedding unchanged) earn 1 / (tied choices), what a random tie-break earns.
"""

from __future__ import annotations

from panel2patch.evaluate.common import Outcome, tie_credit
from panel2patch.evaluate.datasets import PairSet
from panel2patch.evaluate.retrieval import LEVEL_ORDER


def run(models, pairsets: list[PairSet], k: int = 3, seed: int = 0, batch_size: int = 64) -> Outcome:
    from panel2patch.train.perturb import perturb

    out = Outcome()
    for ps in pairsets:
        out.uses(ps.name, ps.sha256, ps.source, len(ps.pairs))
        for level, pairs in sorted(ps.by_level().items(), key=lambda kv: LEVEL_ORDER.get(kv[0], 9)):
            data = f"{ps.name}/{level}"
            items = [(p, [p.text, *v]) for p in pairs if len(v := perturb(p.text, k, seed=seed)) == k]
            if not items:
                out.skip("perturbed", data, f"{len(pairs)} pairs, none with {k} perturbations")
                continue
            values, per_item = {}, {}
            for m in models:
                img = m.encode_images([p.image for p, _ in items], batch_size)  # (N, D)
                txt = m.encode_texts([t for _, ts in items for t in ts]).view(len(items), k + 1, -1)  # (N, K+1, D)
                scores = (txt @ img.unsqueeze(-1)).squeeze(-1)  # (N, K+1)
                credit = tie_credit(scores)  # (N,)
                values[m.label], per_item[m.label] = float(credit.mean()), credit.tolist()
            values["chance"] = 1 / (k + 1)
            out.row("perturbed", data, f"pick original of {k + 1}", len(items), values, items=per_item)
    return out
