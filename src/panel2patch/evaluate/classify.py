"""Zero-shot classification (clip_benchmark's ``zero_shot_classifier`` + ``run_classification``:
class embeddings averaged over prompt templates) and the linear probe (scikit-learn logistic regression
on frozen, L2-normalised image features; train/test as the set defines).

References per row: ``chance`` (uniform guess: 1/C for accuracy and balanced accuracy),
``majority`` (always the most frequent training class, the test's when there is no training
split) and, for the probe, ``pixels`` (the same probe on 16x16 grey pixels: what the images give
without any encoder).
"""

from __future__ import annotations

from collections import Counter

import numpy as np
import torch

from panel2patch.evaluate.common import Outcome, quiet_tqdm
from panel2patch.evaluate.datasets import ClassSet

PROBE_CS = (0.01, 0.1, 1.0, 10.0, 100.0)  # inverse L2 strengths tried by cross-validation on train


class _Images(torch.utils.data.Dataset):
    def __init__(self, items, preprocess, classes):
        self.items, self.preprocess, self.classes = items, preprocess, classes  # clip_benchmark reads .classes

    def __len__(self):
        return len(self.items)

    def __getitem__(self, i):
        im, y = self.items[i]
        return self.preprocess(im), y


def _balanced(y_true, y_pred) -> float:
    from sklearn.metrics import balanced_accuracy_score

    return float(balanced_accuracy_score(y_true, y_pred))


def _majority(cs: ClassSet) -> tuple[int, str]:
    src = cs.train or cs.test
    return Counter(y for _, y in src).most_common(1)[0][0], "train" if cs.train else "test"


def _references(cs: ClassSet) -> dict[str, dict[str, float]]:
    y = np.array([t for _, t in cs.test])
    maj, _ = _majority(cs)
    c = len(cs.classnames or set(y) | {t for _, t in cs.train})
    pred = np.full_like(y, maj)
    return {"acc": {"chance": 1 / c, "majority": float((y == maj).mean())},
            "balanced acc": {"chance": 1 / c, "majority": _balanced(y, pred)}}


def zeroshot_predict(model, cs: ClassSet, batch_size: int = 64) -> tuple[np.ndarray, np.ndarray]:
    """(true, predicted) class per test image by clip_benchmark's classifier (templates averaged
    per class) and its run_classification."""
    from clip_benchmark.metrics import zeroshot_classification as zc

    loader = torch.utils.data.DataLoader(_Images(cs.test, model.preprocess, cs.classnames), batch_size=batch_size)
    with quiet_tqdm(zc):
        classifier = zc.zero_shot_classifier(model.model, model.tokenizer, cs.classnames, cs.templates, "cpu", amp=False)
        logits, target = zc.run_classification(model.model, classifier, loader, "cpu", amp=False)
    return target.numpy(), logits.argmax(1).numpy()


def _summary(y, pred) -> dict[str, float]:
    return {"acc": float((pred == y).mean()), "balanced acc": _balanced(y, pred)}


def zeroshot(model, cs: ClassSet, batch_size: int = 64) -> dict[str, float]:
    """Top-1 and balanced accuracy of :func:`zeroshot_predict`, computed here (clip_benchmark
    1.6.2's own ``accuracy`` calls ``float()`` on a 1-element array, which numpy 2.4 refuses)."""
    return _summary(*zeroshot_predict(model, cs, batch_size))


def _fit_predict(x_train, y_train, x_test, seed: int) -> np.ndarray:
    """Standardised features -> L2 logistic regression, its C chosen by stratified k-fold
    accuracy on the training split (k = 3, fewer when a class has fewer images)."""
    from sklearn.linear_model import LogisticRegression
    from sklearn.model_selection import GridSearchCV, StratifiedKFold
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    pipe = make_pipeline(StandardScaler(), LogisticRegression(max_iter=2000))
    folds = min(3, min(Counter(y_train.tolist()).values()))
    if folds >= 2:
        pipe = GridSearchCV(pipe, {"logisticregression__C": list(PROBE_CS)},
                            cv=StratifiedKFold(folds, shuffle=True, random_state=seed))
    return pipe.fit(x_train, y_train).predict(x_test)


def _pixels(items) -> np.ndarray:
    return np.stack([np.asarray(im.convert("L").resize((16, 16)), dtype=np.float32).reshape(-1) / 255 for im, _ in items])


def probe_scores(x_train, y_train, x_test, y_test, seed: int) -> dict[str, float]:
    return _summary(y_test, _fit_predict(x_train, y_train, x_test, seed))


def _row_items(preds: dict, y, metric: str) -> dict:
    """The per-item outcomes of a row (Outcome.row): each model's 1/0 correctness, and for
    balanced accuracy the items' true classes."""
    items = {label: (pred == y).astype(float).tolist() for label, pred in preds.items()}
    return {"items": items, "item_classes": y.tolist() if metric == "balanced acc" else None}


def run(models, sets: list[ClassSet], benchmarks: set[str], seed: int = 0, batch_size: int = 64) -> Outcome:
    out = Outcome()
    for cs in sets:
        out.uses(cs.name, cs.sha256, cs.source, len(cs.train) + len(cs.test))
        if not cs.test:
            for b in benchmarks & {"zeroshot", "probe"}:
                out.skip(b, cs.name, "no test images")
            continue
        refs = _references(cs)
        n = len(cs.test)
        if "zeroshot" in benchmarks:
            if not cs.classnames:
                out.skip("zeroshot", cs.name, cs.note or "no class names")
            else:
                preds = {}
                for m in models:
                    y, preds[m.label] = zeroshot_predict(m, cs, batch_size)
                per = {k: _summary(y, pred) for k, pred in preds.items()}
                for metric in ("acc", "balanced acc"):
                    out.row("zeroshot", cs.name, metric, n, {**{k: v[metric] for k, v in per.items()}, **refs[metric]},
                            **_row_items(preds, y, metric))
        if "probe" in benchmarks:
            y_train = np.array([y for _, y in cs.train])
            y_test = np.array([y for _, y in cs.test])
            if len(set(y_train.tolist())) < 2:
                out.skip("probe", cs.name, f"{len(cs.train)} training images of {len(set(y_train.tolist()))} class(es): "
                                           "a probe needs two classes")
                continue
            preds = {}
            for m in models:
                xtr = m.encode_images([im for im, _ in cs.train], batch_size).numpy()
                xte = m.encode_images([im for im, _ in cs.test], batch_size).numpy()
                preds[m.label] = _fit_predict(xtr, y_train, xte, seed)
            per = {k: _summary(y_test, pred) for k, pred in preds.items()}
            pix = probe_scores(_pixels(cs.train), y_train, _pixels(cs.test), y_test, seed)
            for metric in ("acc", "balanced acc"):
                out.row("probe", cs.name, metric, n,
                        {**{k: v[metric] for k, v in per.items()}, **refs[metric], "pixels": pix[metric]},
                        **_row_items(preds, y_test, metric))
    return out
