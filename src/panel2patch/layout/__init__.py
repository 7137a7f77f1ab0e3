"""Layout parsing: panels, panel letters and panel kinds of a figure image, on CPU.

* :mod:`.split` panel detection by image analysis (gutters, separator lines, recursive X-Y cuts,
  connected components);
* :mod:`.letters` panel letters (candidates, reading with :mod:`.glyphs` or tesseract, the
  figure's letter run, reading order);
* :mod:`.kind` panel kind (``image`` / ``chart`` / ``diagram`` / ``other``) from image statistics;
* :mod:`.parse` ``parse_figure`` (the API), :mod:`.cli` ``panel2patch panels``, :mod:`.stage`
  the workflow stage (``results/<shard>/layout/``).

A learned detector (:mod:`.detector`) can feed its boxes to ``parse_figure(proposals=...)``.
"""

__all__ = ["parse_figure"]


def __getattr__(name):  # keep ``import panel2patch.layout.<module>`` light (no OpenCV unless needed)
    if name == "parse_figure":
        from .parse import parse_figure

        return parse_figure
    raise AttributeError(name)
