"""Closed-question VQA (yes/no): a small head on frozen image + question features.

Input per question: ``[image, question, image * question]`` (each L2-normalised, D wide, from the
evaluated model's two towers); head: scikit-learn MLP (one hidden layer of ``HIDDEN``), trained on
the set's training questions, scored on its test questions.  References: ``chance`` (0.5),
``majority`` (the training split's most frequent answer) and ``text-only`` (the same head on the
question features alone: how far the question's wording answers it without the image).
"""

from __future__ import annotations

import numpy as np

from panel2patch.evaluate.common import Outcome
from panel2patch.evaluate.datasets import VQASet

HIDDEN = 64  # units of the head's hidden layer: small next to the ~300 training images


def _features(model, rows, batch_size: int):
    images = list({id(im): im for im, _, _ in rows}.values())
    index = {id(im): i for i, im in enumerate(images)}
    img = model.encode_images(images, batch_size).numpy()[[index[id(im)] for im, _, _ in rows]]
    q = model.encode_texts([q for _, q, _ in rows]).numpy()
    return img, q


def _head(x_train, y_train, x_test, seed: int) -> np.ndarray:
    from sklearn.neural_network import MLPClassifier
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    head = MLPClassifier(hidden_layer_sizes=(HIDDEN,), alpha=1e-2, max_iter=300, early_stopping=True,
                         random_state=seed)
    return make_pipeline(StandardScaler(), head).fit(x_train, y_train).predict(x_test)


def run(models, sets: list[VQASet], seed: int = 0, batch_size: int = 64) -> Outcome:
    import warnings

    from sklearn.exceptions import ConvergenceWarning

    out = Outcome()
    for vs in sets:
        out.uses(vs.name, vs.sha256, vs.source, len(vs.train) + len(vs.test))
        y_train = np.array([y for _, _, y in vs.train])
        y_test = np.array([y for _, _, y in vs.test])
        if len(set(y_train.tolist())) < 2 or not len(y_test):
            out.skip("vqa", vs.name, f"{len(vs.train)} training / {len(vs.test)} test yes-no questions: "
                                     "the head needs both answers in training and a test split")
            continue
        values, per_item = {}, {}
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", ConvergenceWarning)
            for m in models:
                itr, qtr = _features(m, vs.train, batch_size)
                ite, qte = _features(m, vs.test, batch_size)
                pred = _head(np.hstack([itr, qtr, itr * qtr]), y_train, np.hstack([ite, qte, ite * qte]), seed)
                values[m.label], per_item[m.label] = float((pred == y_test).mean()), (pred == y_test).tolist()
                if m is models[0]:  # the question alone, with the evaluated model's text tower
                    values["text-only"] = float((_head(qtr, y_train, qte, seed) == y_test).mean())
        majority = int(y_train.mean() >= 0.5)
        values.update({"chance": 0.5, "majority": float((y_test == majority).mean())})
        out.row("vqa", vs.name, "yes-no acc", len(y_test), values, items=per_item)
    return out
