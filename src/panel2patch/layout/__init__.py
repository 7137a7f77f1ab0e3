"""Layout parsing: panels, panel letters and panel kinds of a figure image, on CPU.

* :mod:`.split` panel detection by image analysis (gutters, separator lines, recursive X-Y cuts,
  connected components);
* :mod:`.letters` panel letters (candidates, reading with :mod:`.glyphs` or tesseract, the
  figure's letter run, reading order);
* :mod:`.kind` panel kind (``image`` / ``chart`` / ``diagram`` / ``other``) from image statistics;
* :mod:`.parse` ``parse_figure`` (the API), :mod:`.cli` ``panel2patch panels``, :mod:`.stage`
  the workflow stage (``results/<shard>/layout/``).

A learned detector (:mod:`.detector`) is the second method: ``parse_figure(method=...)`` /
``layout.method`` / ``panel2patch panels --method`` choose ``splitter`` (image analysis, the
default, needs no weights), ``detector`` (its boxes, letters attached by the same reader) or
``combined`` (image analysis, with the detector's boxes as cut hints where no gutter separates
lettered panels). ``benchmarks/layout_eval.py --detector-weights`` scores all three.
"""

__all__ = ["parse_figure"]


def __getattr__(name):  # keep ``import panel2patch.layout.<module>`` light (no OpenCV unless needed)
    if name == "parse_figure":
        from .parse import parse_figure

        return parse_figure
    raise AttributeError(name)
