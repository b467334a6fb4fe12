"""Tables through Arrow: CSV and Parquet give the same data, a directory of part files is one table, a streamed
table (record batches into a memory-mapped cache) equals the in-memory one, and bad cells are named."""

import json

import pyarrow as pa
import pyarrow.csv as pacsv
import pyarrow.parquet as pq
import pytest
import torch

from dlcli.config import validate_config
from dlcli.data import load_data
from tests.test_tables import CONFIGS, train, write_table


def config(path, **data):
    dataset = data.pop("dataset", "csv")
    return validate_config({"seed": 3, "data": {"dataset": dataset, "train_file": str(path), "val_split": 0.2,
                                                "test_split": 0.2, **data}, "model": {"type": "mlp"}})


def same(a, b):
    for split in ("train", "val", "test"):
        x, y = getattr(a, split), getattr(b, split)
        assert torch.equal(x.x, y.x) and torch.equal(x.y, y.y), split
    assert a.classes == b.classes
    pa_, pb = dict(a.preprocessing), dict(b.preprocessing)
    fa, fb = pa_.pop("fill"), pb.pop("fill")  # sums over other chunkings may differ in the last bit
    assert pa_ == pb and fa == pytest.approx(fb, rel=1e-12)
    assert a.normalizer.mean == pytest.approx(b.normalizer.mean) and a.normalizer.std == pytest.approx(b.normalizer.std)


def as_parquet(csv_path, parquet_path, **kw):
    table = pacsv.read_csv(csv_path, convert_options=pacsv.ConvertOptions(column_types={"label": pa.string()}))
    pq.write_table(table, parquet_path, **kw)
    return parquet_path


def test_parquet_gives_the_same_data_as_csv(tmp_path):
    csv_path = write_table(tmp_path / "t.csv", n=400)
    parquet = as_parquet(csv_path, tmp_path / "t.parquet")
    from_csv = load_data(config(csv_path))
    same(from_csv, load_data(config(parquet, dataset="parquet")))
    same(from_csv, load_data(config(parquet)))  # dataset: csv with a .parquet file reads it as Parquet
    assert from_csv.preprocessing["numeric"] == ["x1", "x2"] and len(from_csv.train) == 240


def test_a_directory_of_part_files_is_one_table(tmp_path):
    csv_path = write_table(tmp_path / "t.csv", n=400)
    table = pacsv.read_csv(csv_path, convert_options=pacsv.ConvertOptions(column_types={"label": pa.string()}))
    parts = tmp_path / "parts"
    parts.mkdir()
    for i, start in enumerate(range(0, 400, 150)):
        pq.write_table(table.slice(start, 150), parts / f"part-{i:03d}.parquet")
    (parts / "_SUCCESS").write_text("")  # what Spark leaves beside its parts
    same(load_data(config(csv_path)), load_data(config(parts, dataset="parquet")))


def test_a_streamed_table_equals_the_in_memory_one_and_reuses_its_cache(tmp_path, monkeypatch):
    import dlcli.data.tables as tables

    monkeypatch.setattr(tables, "CHUNK_ROWS", 64)  # many record batches, so rows cross batch boundaries
    csv_path = write_table(tmp_path / "t.csv", n=500)
    for drop in ("fill", "drop"):
        in_memory = load_data(config(csv_path, missing=drop, stream=False))
        streamed = load_data(config(csv_path, missing=drop, stream=True))
        same(in_memory, streamed)
    entries = list((tmp_path / ".cache").glob("table-*"))
    assert len(entries) == 2 and all((e / "done").is_file() for e in entries)

    def no_encoding(*args):
        raise AssertionError("the cache should have answered")

    monkeypatch.setattr(tables.TableEncoder, "encode", no_encoding)
    same(in_memory, load_data(config(csv_path, missing="drop", stream=True)))
    csv_path.write_text(csv_path.read_text() + "0.5,0.5,red,pos\n")  # a changed file is read again
    with pytest.raises(AssertionError, match="cache should have answered"):
        load_data(config(csv_path, missing="drop", stream=True))


def test_bad_cells_are_named_by_file_line_or_row_and_column(tmp_path, cli):
    rows = [{"x1": str(i * 0.5), "label": "ab"[i % 2]} for i in range(30)]
    rows[7]["x1"] = "oops"
    table = pa.table({"x1": [r["x1"] for r in rows], "label": [r["label"] for r in rows]})
    pq.write_table(table, tmp_path / "bad.parquet")
    result = cli("train", CONFIGS / "table_csv.yaml", "--runs-dir", tmp_path / "runs",
                 "--set", f"data.train_file={tmp_path / 'bad.parquet'}")
    assert result.exit_code == 2 and result.stderr.count("\n") == 1, result.output
    assert f"{tmp_path / 'bad.parquet'}: row 8, column 'x1': 'oops' is not a number" in result.stderr

    (tmp_path / "u.csv").write_bytes(b"x1,label\n\xff\xfe,a\n1,b\n")
    result = cli("train", CONFIGS / "table_csv.yaml", "--set", f"data.train_file={tmp_path / 'u.csv'}")
    assert result.exit_code == 2 and "is not UTF-8 text" in result.stderr
    result = cli("train", CONFIGS / "table_csv.yaml", "--set", f"data.train_file={tmp_path / 'none.csv'}")
    assert result.exit_code == 2 and "none.csv: no such file or directory" in result.stderr


def test_a_parquet_run_predicts_rows_of_parquet_and_csv_files(cli, tmp_path):
    parquet = as_parquet(write_table(tmp_path / "t.csv"), tmp_path / "t.parquet")
    run = train(cli, CONFIGS / "table_csv.yaml", tmp_path, "data.dataset=parquet", f"data.train_file={parquet}",
                "train.epochs=15")
    summary = json.loads((run / "summary.json").read_text())
    assert summary["test"]["accuracy"] > 0.85
    pq.write_table(pa.table({"x1": [3.0, -3.0], "x2": [3.0, -3.0], "color": ["red", "blue"]}), tmp_path / "new.parquet")
    (tmp_path / "new.csv").write_text("color,x2,x1\nred,3.0,3.0\n")  # columns in any order
    out = cli("predict", tmp_path / "new.parquet", tmp_path / "new.csv", "--run", run.name,
              "--runs-dir", tmp_path / "runs", "--json", "-k", "1")
    assert out.exit_code == 0, out.output
    answers = json.loads(out.stdout)
    assert [a["row"] for a in answers] == [f"{tmp_path / 'new.parquet'}:row 1", f"{tmp_path / 'new.parquet'}:row 2",
                                           f"{tmp_path / 'new.csv'}:2"]
    assert [a["top"][0]["label"] for a in answers] == ["pos", "neg", "pos"]


def test_a_streamed_table_reads_only_its_labels_first_and_nothing_once_cached(tmp_path, monkeypatch):
    """Pass A converts the label column alone; a second run (and evaluate, with the run's stored fit) finds the
    cache before any pass and reads no row of the table."""
    import dlcli.data.tables as tables

    monkeypatch.setattr(tables, "CHUNK_ROWS", 64)
    csv_path = write_table(tmp_path / "t.csv", n=500)
    passes = []
    real_iter = tables._Stream.__iter__

    def spy(stream):
        passes.append(stream.columns)
        for chunk in real_iter(stream):
            assert chunk.table.column_names == (stream.columns or chunk.table.column_names)
            yield chunk

    monkeypatch.setattr(tables._Stream, "__iter__", spy)
    first = load_data(config(csv_path, stream=True))
    assert passes == [["label"], None, None]  # labels, then the fit and the encoding read every column
    same(load_data(config(csv_path, stream=False)), first)

    passes.clear()
    load_data(config(csv_path, missing="drop", stream=True))  # a gap drops a row: pass A reads the features too
    assert passes[0] == ["label", "x1", "x2", "color"]

    def no_reading(stream):
        raise AssertionError("the table was read again")

    monkeypatch.setattr(tables._Stream, "__iter__", no_reading)
    same(first, load_data(config(csv_path, stream=True)))
    same(first, load_data(config(csv_path, stream=True), preprocessing=first.preprocessing))
    shape, classes, _ = config(csv_path, stream=True).data.describe(3)
    assert shape == first.input_shape and classes == first.classes
    with pytest.raises(AssertionError, match="read again"):  # another seed is another split: read again
        load_data(validate_config({**config(csv_path, stream=True).resolved(), "seed": 4}))
