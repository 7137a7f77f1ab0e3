"""The shared stage-table reader: Parquet nulls come back as None, other values unchanged."""

from __future__ import annotations

import math

import pandas as pd
import pyarrow as pa

from panel2patch.ingest.tables import nulls, read_table, write_table

SCHEMA = pa.schema([("name", pa.string()), ("score", pa.float32()), ("count", pa.int32()), ("n", pa.int32()),
                    ("x", pa.float64()), ("bbox", pa.list_(pa.int32())), ("ok", pa.bool_())])
ROWS = [{"name": "a", "score": 0.5, "count": 3, "n": 1, "x": 1.25, "bbox": [0, 1, 2, 3], "ok": True},
        {"name": None, "score": None, "count": None, "n": 2, "x": float("nan"), "bbox": None, "ok": False},
        {"name": "c", "score": 2.0, "count": 0, "n": 3, "x": -4.0, "bbox": [], "ok": True}]


def test_read_table_gives_none_for_nulls_and_keeps_other_values(tmp_path):
    write_table(ROWS, SCHEMA, tmp_path / "t.parquet")
    df = read_table(tmp_path / "t.parquet")
    assert list(df.columns) == SCHEMA.names and len(df) == 3
    missing = df.iloc[1]
    for col in ("name", "score", "count", "x", "bbox"):  # string, float, int (with nulls), NaN, list
        assert missing[col] is None, col
    for r in df.itertuples():  # None, never NaN, in every row of every column
        assert not any(isinstance(v, float) and math.isnan(v) for v in r[1:]), r
    assert df.name.tolist() == ["a", None, "c"]
    assert df.score.tolist() == [0.5, None, 2.0] and df["count"].tolist() == [3, None, 0]
    assert df.x.tolist() == [1.25, None, -4.0]
    assert list(df.bbox.iloc[0]) == [0, 1, 2, 3] and list(df.bbox.iloc[2]) == []
    # columns without a null keep their dtype
    assert df.n.dtype == "int32" and df.n.tolist() == [1, 2, 3]
    assert df.ok.dtype == bool and df.ok.tolist() == [True, False, True]
    # only some columns
    part = read_table(tmp_path / "t.parquet", columns=["name", "n"])
    assert list(part.columns) == ["name", "n"] and part.name.tolist() == ["a", None, "c"]


def test_read_table_of_an_empty_table_and_nulls_on_a_frame(tmp_path):
    write_table([], SCHEMA, tmp_path / "empty.parquet")
    empty = read_table(tmp_path / "empty.parquet")
    assert empty.empty and list(empty.columns) == SCHEMA.names
    frame = pd.DataFrame({"label": ["A", None], "v": [1.0, float("nan")], "i": [1, 2]})
    clean = nulls(frame)
    assert clean.label.tolist() == ["A", None] and clean.v.tolist() == [1.0, None] and clean.i.dtype == "int64"
    assert nulls(clean).equals(clean)  # idempotent
    assert pd.isna(frame.v.iloc[1])  # the input frame is left as it was
