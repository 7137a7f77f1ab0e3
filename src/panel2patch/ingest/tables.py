"""Parquet tables written by the ingest stage, one set per shard.

``results/<shard>/ingest/`` holds:

``figures.parquet`` (one row per ingested figure)
    ============== ============ ==========================================================
    column         type         meaning
    ============== ============ ==========================================================
    figure_id      string       stable id: ``<article_key>__<figure_key>`` ([A-Za-z0-9._-])
    article_id     string       PMCID, else PMID, else DOI, else the input file's stem
    pmcid          string/null  ``PMC1234567``
    pmid           string/null
    doi            string/null
    label          string/null  printed label, e.g. ``Figure 2``
    caption_title  string/null  the caption's ``<title>`` (JATS) or first sentence (PDF)
    caption        string       full caption: title + text, whitespace normalised
    image_path     string       normalised image, relative to the shard's ingest folder
    image_format   string       ``png`` or ``jpeg`` (RGB)
    width          int32        pixels, as in the source (never resized)
    height         int32
    image_sha256   string       sha256 of the file at ``image_path``
    source_image   string/null  image file name inside the source (JATS) or null (PDF)
    licence        string/null  licence URL or type from ``<permissions>`` (or a Creative Commons
                                ``<copyright-statement>``); null if absent
    licence_code   string/null  normalised: cc-by, cc-by-sa, cc-by-nc(-sa/-nd), cc-by-nd, cc0,
                                public-domain, other (``ingest.licence.licence_code``)
    source_kind    string       ``jats`` | ``pdf``
    source_path    string       the input unit (file, folder or package) as discovered
    page           int32/null   1-based PDF page, null for JATS
    pdf_bbox       list<double> PDF figure box in points [x0, y0, x1, y1], null for JATS
    method         string       how it was found: ``jats``, ``pdf-layout``, ``pdf-heuristic``
    inline_refs    list<struct<sentence: string, panels: list<string>>>
                                body sentences citing the figure; ``panels`` holds the panel
                                letters cited with it ("Fig. 2B-D" -> B, C, D)
    shard          string
    ============== ============ ==========================================================

``articles.parquet`` (one row per article that was read, even if it yields no figure)
    article_id, pmcid, pmid, doi, title, journal, licence, licence_code, source_kind, source_path,
    n_figures (int32), shard.

``skips.parquet`` (one row per article or figure that was not ingested)
    shard, source_path, article_id (null when unknown), figure_key (null for a whole article),
    reason (short code, see ``SKIP_REASONS``), detail (human-readable message).
"""

from __future__ import annotations

from pathlib import Path

import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq

SKIP_REASONS = {
    "malformed-xml": "the XML could not be parsed",
    "not-jats": "the XML is not a JATS/NLM article",
    "no-figures": "the article or PDF has no figure",
    "missing-image": "the figure's graphic file is not in the article's folder (its sub-folders are not searched) or package",
    "unreadable-image": "the image file is truncated, corrupt or of an unknown format",
    "decompression-bomb": "the image has more pixels than ingest.max_image_pixels",
    "missing-caption": "the figure has no caption text",
    "bad-package": "the package could not be opened or holds unsafe members",
    "unreadable-pdf": "the PDF could not be opened",
    "pdf-render-failed": "the PDF figure region could not be rendered",
    "unsupported-input": "the input is not a JATS file, article folder, package or PDF",
    "symlink": "a symbolic link inside an input folder (an article, folder or figure file): never followed",
    "retracted": "the PMC OA file list marks the article retracted (its newest row); not ingested",
    "missing-article": "a PMC OA bulk archive lacks the XML its file list names (or it is unsafe or too large)",
    "error": "an unexpected error (see detail)",
}



class SkipError(ValueError):
    """An article or figure that cannot be ingested; ``reason`` is a key of ``SKIP_REASONS``."""

    def __init__(self, reason: str, detail: str):
        if reason not in SKIP_REASONS:
            raise ValueError(f"unknown skip reason {reason!r}")
        super().__init__(detail)
        self.reason = reason


INLINE_REF = pa.struct([("sentence", pa.string()), ("panels", pa.list_(pa.string()))])

FIGURES = pa.schema(
    [
        ("figure_id", pa.string()),
        ("article_id", pa.string()),
        ("pmcid", pa.string()),
        ("pmid", pa.string()),
        ("doi", pa.string()),
        ("label", pa.string()),
        ("caption_title", pa.string()),
        ("caption", pa.string()),
        ("image_path", pa.string()),
        ("image_format", pa.string()),
        ("width", pa.int32()),
        ("height", pa.int32()),
        ("image_sha256", pa.string()),
        ("source_image", pa.string()),
        ("licence", pa.string()),
        ("licence_code", pa.string()),
        ("source_kind", pa.string()),
        ("source_path", pa.string()),
        ("page", pa.int32()),
        ("pdf_bbox", pa.list_(pa.float64())),
        ("method", pa.string()),
        ("inline_refs", pa.list_(INLINE_REF)),
        ("shard", pa.string()),
    ]
)

ARTICLES = pa.schema(
    [
        ("article_id", pa.string()),
        ("pmcid", pa.string()),
        ("pmid", pa.string()),
        ("doi", pa.string()),
        ("title", pa.string()),
        ("journal", pa.string()),
        ("licence", pa.string()),
        ("licence_code", pa.string()),
        ("source_kind", pa.string()),
        ("source_path", pa.string()),
        ("n_figures", pa.int32()),
        ("shard", pa.string()),
    ]
)

SKIPS = pa.schema(
    [
        ("shard", pa.string()),
        ("source_path", pa.string()),
        ("article_id", pa.string()),
        ("figure_key", pa.string()),
        ("reason", pa.string()),
        ("detail", pa.string()),
    ]
)


def write_table(rows, schema: pa.Schema, path: str | Path) -> None:
    """Write ``rows`` (dicts keyed by column, or a DataFrame) as Parquet, atomically (tmp file + rename)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    if isinstance(rows, pd.DataFrame):
        table = pa.Table.from_pandas(rows[schema.names], schema=schema, preserve_index=False)
    else:
        table = pa.Table.from_pylist([{k: r.get(k) for k in schema.names} for r in rows], schema=schema)
    tmp = path.with_name(path.name + ".tmp")
    pq.write_table(table, tmp)
    tmp.replace(path)


def nulls(df: pd.DataFrame) -> pd.DataFrame:
    """``df`` with every missing value (NaN, None, pd.NA, NaT) as None, so ``x is None`` and
    ``if x`` work on the values.

    Only the columns that hold a missing value change: they become object columns (an int column
    with nulls, which pandas reads as float64, then holds Python floats such as ``2.0`` and None).
    Columns without a missing value keep their dtype. Use it on a frame not read with
    :func:`read_table`; applying it twice changes nothing."""
    missing = df.isna()
    cols = [c for c in df.columns if missing[c].any()]
    if not cols:
        return df
    out = df.copy(deep=False)
    for c in cols:
        out[c] = df[c].astype(object).where(~missing[c], None)
    return out


def read_table(path: str | Path, columns: list[str] | None = None) -> pd.DataFrame:
    """Read a stage table (Parquet; ``columns`` to read only some) with its missing values as None.

    pandas reads a Parquet null as NaN (float and string columns, and int columns with nulls,
    which become float64) or pd.NA; stages use the values directly, so every stage reads its
    inputs here instead of ``pd.read_parquet``. See :func:`nulls` for the dtypes."""
    return nulls(pd.read_parquet(path, columns=columns))
