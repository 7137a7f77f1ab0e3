"""What every benchmark returns: table rows with a value per model and per trivial reference.

A row is ``{"benchmark", "data", "metric", "n", "values": {column: value}}``; the columns are
the models' labels (``model``, ``untrained``, ...) and the references that make sense for the
metric (``chance``, ``majority``, ``text-only``, ``pixels``).  A benchmark that cannot run on
some data (no test pairs at a level, no class names) returns a ``skip`` with the reason instead
of a row, so a table never holds a metric without its baseline.

A row may also hold ``"items": {model label: [outcome per test item]}`` (the models' columns
only, the items in the data's order): 1/0 hits, or tie credits, whose mean is the row's value;
a balanced-accuracy row adds ``"item_classes"`` (each item's true class), its value being the
mean over classes of the per-class mean. Two runs evaluated on the same data list the same
items in the same order, so paired comparisons (panel2patch.evaluate.ablation) can resample
them.
"""

from __future__ import annotations

import contextlib
from dataclasses import dataclass, field


@dataclass
class Outcome:
    rows: list[dict] = field(default_factory=list)
    skipped: list[dict] = field(default_factory=list)
    data: dict[str, dict] = field(default_factory=dict)  # name -> {"sha256", "source", "n"}

    def row(self, benchmark: str, data: str, metric: str, n: int, values: dict[str, float],
            items: dict[str, list] | None = None, item_classes: list | None = None) -> None:
        row = {"benchmark": benchmark, "data": data, "metric": metric, "n": int(n),
               "values": {k: float(v) for k, v in values.items()}}
        if items:
            row["items"] = {k: [round(float(x), 6) for x in v] for k, v in items.items()}
            if item_classes is not None:
                row["item_classes"] = [int(c) for c in item_classes]
        self.rows.append(row)

    def skip(self, benchmark: str, data: str, reason: str) -> None:
        self.skipped.append({"benchmark": benchmark, "data": data, "reason": reason})

    def uses(self, name: str, sha256: str, source: str, n: int) -> None:
        self.data[name] = {"sha256": sha256, "source": source, "n": int(n)}

    def extend(self, other: "Outcome") -> None:
        self.rows += other.rows
        self.skipped += other.skipped
        self.data.update(other.data)


@contextlib.contextmanager
def quiet_tqdm(*modules):
    """clip_benchmark draws tqdm bars unconditionally: off unless panel2patch shows progress."""
    from panel2patch.cli import show_progress

    if show_progress():
        yield
        return
    saved = [(m, m.tqdm) for m in modules]
    for m in modules:
        m.tqdm = lambda it, *a, **k: it
    try:
        yield
    finally:
        for m, t in saved:
            m.tqdm = t


def tie_credit(scores):
    """(N, C) scores, column 0 the right answer -> (N,) credit: 1 when it scores highest alone,
    1 / t when it ties with t - 1 others at the top (a random tie-break's expectation), else 0."""
    top = scores.max(dim=1, keepdim=True).values
    at_top = scores >= top - 1e-6 * top.abs().clamp(min=1)
    return at_top[:, 0].float() / at_top.sum(1).float()
