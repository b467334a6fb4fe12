"""dlcli.inputs: what a Python user holds (paths, PIL images, arrays, tensors, DataFrames, Arrow tables, dicts, texts)
becomes exactly the input a file gives, for runs trained once per module through the CLI."""

import csv
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import torch
import yaml
from PIL import Image
from typer.testing import CliRunner

from dlcli.cli import app
from dlcli.data.tables import encode_rows
from dlcli.errors import DlcliError
from dlcli.loaded import load_run, read_data_info
from dlcli.inputs import image_inputs, table_inputs, text_inputs
from tests.conftest import tiny_config
from tests.test_tables import write_table, write_texts

CONFIGS = Path(__file__).parent.parent / "configs"
RUNNER = CliRunner()


def train(root, config, *sets):
    args = [a for s in sets for a in ("--set", s)]
    result = RUNNER.invoke(app, ["train", str(config), "--runs-dir", str(root), "--quiet", *args])
    assert result.exit_code == 0, result.output
    return root / result.stdout.strip().splitlines()[-1]


def one_line(err: pytest.ExceptionInfo, *fragments):
    message = str(err.value)
    assert "\n" not in message, message
    for fragment in fragments:
        assert fragment in message, message


@pytest.fixture(scope="module")
def root(tmp_path_factory):
    return tmp_path_factory.mktemp("inputs")


@pytest.fixture(scope="module")
def image_runs(root):
    """A grayscale run (1x8x8 MLP) and an RGB run (3x12x10 CNN) on synthetic images."""
    made = {}
    for name, shape, model in (("gray", [1, 8, 8], {"type": "mlp", "hidden": [16]}),
                               ("rgb", [3, 12, 10], {"type": "cnn", "channels": [4], "hidden": [8]})):
        cfg = tiny_config(name=name, train={"epochs": 1, "batch_size": 32})
        cfg["data"]["shape"], cfg["model"] = shape, model
        path = root / f"{name}.yaml"
        path.write_text(yaml.safe_dump(cfg))
        made[name] = train(root / "runs", path)
    return made


def shape_of(run):
    return read_data_info(run)["input_shape"]


@pytest.fixture(scope="module")
def pictures(root):
    """PNG files of every kind a user meets: RGB, grayscale, RGBA, LA, 16-bit, 1-bit, palette; sizes that need a
    resize and sizes that do not (12 x 10 is the RGB run's, 8 x 8 the grayscale run's)."""
    rng = np.random.default_rng(0)
    folder = root / "pictures"
    folder.mkdir()
    made = {
        "rgb": Image.fromarray(rng.integers(0, 256, (17, 23, 3), dtype=np.uint8)),
        "rgb_exact": Image.fromarray(rng.integers(0, 256, (12, 10, 3), dtype=np.uint8)),
        "gray": Image.fromarray(rng.integers(0, 256, (19, 13), dtype=np.uint8)),
        "gray_exact": Image.fromarray(rng.integers(0, 256, (8, 8), dtype=np.uint8)),
        "rgba": Image.fromarray(rng.integers(0, 256, (9, 14, 4), dtype=np.uint8)),
        "la": Image.fromarray(rng.integers(0, 256, (11, 11, 2), dtype=np.uint8)),
        "gray16": Image.fromarray(rng.integers(0, 65536, (15, 9), dtype=np.uint16)),
        "bilevel": Image.fromarray(rng.integers(0, 2, (10, 12)).astype(bool)),
        "palette": Image.fromarray(rng.integers(0, 256, (12, 10, 3), dtype=np.uint8)).quantize(16),
    }
    paths = {}
    for name, img in made.items():
        paths[name] = folder / f"{name}.png"
        img.save(paths[name])
    exif = Image.Exif()
    exif[0x0112] = 6  # orientation: rotate 90 degrees to display
    paths["rotated"] = folder / "rotated.png"
    made["rgb"].save(paths["rotated"], exif=exif)
    assert Image.open(paths["gray16"]).mode == "I;16" and Image.open(paths["la"]).mode == "LA"
    return paths


# ---------------------------------------------------------------- images


@pytest.mark.parametrize("run_name", ["gray", "rgb"])
@pytest.mark.parametrize("invert", [False, True])
def test_a_file_and_the_same_picture_in_memory_give_identical_tensors(image_runs, pictures, run_name, invert):
    shape = shape_of(image_runs[run_name])
    for name, path in pictures.items():
        from_file, names, problems = image_inputs([str(path)], shape, invert)
        assert names == [str(path)] and not problems and from_file.dtype == torch.uint8
        assert tuple(from_file.shape) == (1, *shape)
        forms = {"Path": path, "PIL image": Image.open(path), "loaded PIL image": Image.open(path).convert(
            Image.open(path).mode)}
        if name not in ("palette", "rotated"):  # np.asarray: a palette's indices; the pixels as stored, not turned
            pixels = np.asarray(Image.open(path))
            forms.update({"array": pixels, "tensor": torch.from_numpy(pixels.copy())})
            if pixels.ndim == 2:
                forms["array HxWx1"] = pixels[..., None]
        for form, value in forms.items():
            x, _, problems = image_inputs(value, shape, invert)
            assert not problems
            assert torch.equal(x, from_file), f"{name} as {form}"
    turned = image_inputs(pictures["rotated"], shape, invert)[0]
    assert not torch.equal(turned, image_inputs(pictures["rgb"], shape, invert)[0])  # the orientation was applied


@pytest.mark.parametrize("run_name", ["gray", "rgb"])
@pytest.mark.parametrize("invert", [False, True])
@pytest.mark.parametrize("size", ["exact", "resized"])
def test_batches_in_every_layout_match_the_files(image_runs, pictures, root, run_name, invert, size):
    shape = shape_of(image_runs[run_name])
    c, h, w = shape
    rng = np.random.default_rng(1)
    hw = (h, w) if size == "exact" else (h + 5, w + 3)
    shapes = {"gray": hw, "rgb": (*hw, 3)}
    folder = root / f"batch-{run_name}-{invert}-{size}"
    folder.mkdir()
    for kind, one in shapes.items():
        stack = rng.integers(0, 256, (4, *one), dtype=np.uint8)
        files = []
        for k, image in enumerate(stack):
            files.append(folder / f"{kind}{k}.png")
            Image.fromarray(image).save(files[-1])
        expected, names, _ = image_inputs([str(f) for f in files], shape, invert)
        channels_first = stack[:, None] if stack.ndim == 3 else stack.transpose(0, 3, 1, 2)
        layouts = {"NHW(C)": stack, "N1HW / NCHW": channels_first, "list": list(stack)}
        if stack.ndim == 3:
            layouts["NHW1"] = stack[..., None]
        for layout, batch in layouts.items():
            for label, value in (("array", batch), ("tensor", torch.from_numpy(np.ascontiguousarray(batch)))):
                if layout == "list":
                    value = [torch.from_numpy(a) for a in batch] if label == "tensor" else batch
                x, got, problems = image_inputs(value, shape, invert)
                assert torch.equal(x, expected), f"{kind} {layout} {label}"
                assert not problems
                assert got == ([f"{label}[{k}]" for k in range(4)])
        # the same pixels one by one (always through PIL) agree with the batch (made in one step when it can be)
        singles = torch.cat([image_inputs(image, shape, invert)[0] for image in stack])
        assert torch.equal(singles, expected)


def test_an_rgb_run_reads_a_channels_first_tensor_as_one_image(image_runs, pictures):
    shape = shape_of(image_runs["rgb"])
    expected = image_inputs(pictures["rgb"], shape)[0]
    chw = torch.from_numpy(np.asarray(Image.open(pictures["rgb"])).copy()).permute(2, 0, 1)
    x, names, _ = image_inputs(chw, shape)
    assert torch.equal(x, expected) and names == ["tensor[0]"]
    # for a grayscale run, (N, H, W) is a batch: MNIST-style data[:3]
    gray = torch.randint(0, 256, (3, 8, 8), dtype=torch.uint8)
    assert len(image_inputs(gray, shape_of(image_runs["gray"]))[1]) == 3


def test_mixed_inputs_keep_their_order_names_and_problems(image_runs, pictures, root):
    shape = shape_of(image_runs["gray"])
    folder = root / "mixed"
    folder.mkdir()
    for name in ("b.png", "a.png"):
        Image.open(pictures["gray"]).save(folder / name)
    (folder / "notes.txt").write_text("not an image")
    broken = folder / "broken.png"
    broken.write_bytes(b"\x89PNG not really")
    batch = np.stack([np.asarray(Image.open(pictures["gray_exact"]))] * 2)
    x, names, problems = image_inputs(
        [str(folder), Image.open(pictures["gray"]), batch, str(root / "missing.png"), torch.from_numpy(batch[0])],
        shape)
    assert names == [str(folder / "a.png"), str(folder / "b.png"), "image[1]", "array[2][0]", "array[2][1]",
                     "tensor[4]"]
    assert len(x) == 6
    assert problems[0][0] == str(folder / "broken.png") and "not an image" in problems[0][1]
    assert problems[1] == (str(root / "missing.png"), "no such file or directory")
    assert torch.equal(x[0], x[2]) and torch.equal(x[3], x[5])


def test_whole_number_floats_are_pixels_and_other_floats_are_refused(image_runs, pictures):
    shape = shape_of(image_runs["rgb"])
    pixels = np.asarray(Image.open(pictures["rgb"]))
    expected = image_inputs(pictures["rgb"], shape)[0]
    for value in (pixels.astype(np.float32), torch.from_numpy(pixels.astype(np.float64)),
                  pixels.astype(np.int64), torch.from_numpy(pixels.astype(np.int16))):
        assert torch.equal(image_inputs(value, shape)[0], expected)
    for bad, fragment in ((pixels / 255.0, "values 0 to 1"), (pixels - 128.0, "values -128"),
                          (pixels // 2 + 0.5, "not whole numbers"), (np.full((5, 5), np.nan), "not finite")):
        with pytest.raises(DlcliError) as err:
            image_inputs(bad, shape)
        one_line(err, "array", fragment, "uint8")
    with pytest.raises(DlcliError) as err:
        image_inputs([pixels, torch.from_numpy(pixels / 255.0)], shape)
    one_line(err, "tensor[1]", "uint8")
    with pytest.raises(DlcliError) as err:
        image_inputs(np.full((4, 4), -1, dtype=np.int32), shape)
    one_line(err, "values -1 to -1", "uint8")


def test_unsupported_objects_and_shapes_give_one_line(image_runs):
    shape = shape_of(image_runs["gray"])
    for bad, fragments in (({"a": 1}, ("input: a dict is not an image", "PIL images", "NumPy arrays")),
                           ([np.zeros((8, 8), np.uint8), 3.5], ("input[1]: a float", "torch tensors")),
                           ([[1, 2], [3, 4]], ("input[0]: a list",)),
                           (np.zeros((2, 3, 4, 5, 6), np.uint8), ("shape (2, 3, 4, 5, 6)", "(N, C, H, W)")),
                           (np.zeros((2, 5, 7, 9), np.uint8), ("channel axis", "(2, 5, 7, 9)")),
                           ([], ("no images given",))):
        with pytest.raises(DlcliError) as err:
            image_inputs(bad, shape)
        one_line(err, *fragments)
    with pytest.raises(DlcliError) as err:
        image_inputs(np.zeros((8, 8), np.uint8), (5,))
    one_line(err, "not images")


def test_image_inputs_feed_the_run(image_runs, pictures):
    loaded = load_run(image_runs["rgb"], device="cpu")
    x, names, _ = image_inputs([pictures["rgb"], Image.open(pictures["rgba"])], loaded.input_shape)
    answers = loaded.answers(x, 2)
    assert len(answers) == 2 and len(answers[0]["top"]) == 2


# ---------------------------------------------------------------- tables

ROWS = [  # typed as a Python user holds them; CSV_ROWS below is the same table as a file
    {"x2": 3.0, "x1": 3.0, "color": "red", "note": "an extra column"},
    {"x2": None, "x1": -1.5, "color": "purple", "note": "x2 missing, a colour never seen"},
    {"x2": 0.25, "x1": 0.0, "color": None, "note": "colour missing"},
    {"x2": 2.0, "x1": 7.0, "color": "blue", "note": ""},
]
CSV_ROWS = "note,color,x1,x2\nan extra column,red,3.0,3.0\n\"x2 missing, a colour never seen\",purple,-1.5,\n" \
           "colour missing,,0.0,0.25\n,blue,7.0,2.0\n"


@pytest.fixture(scope="module")
def table_run(root):
    table = write_table(root / "table.csv", n=120)
    return train(root / "table-runs", CONFIGS / "table_csv.yaml", f"data.train_file={table}", "train.epochs=2")


@pytest.fixture(scope="module")
def table(table_run, root):
    """(stored state, data entry, the rows file, its encoded matrix)."""
    info = read_data_info(table_run)
    state = {k: v for k, v in info["preprocessing"].items() if k != "kind"}
    entry = load_run(table_run, device="cpu").cfg.data
    path = root / "rows.csv"
    path.write_text(CSV_ROWS)
    x, names = encode_rows(str(path), state, entry)
    assert names == [f"{path}:{line}" for line in range(2, 6)] and x.shape[0] == 4
    return state, entry, path, x


def columns_of(rows):
    return {k: [r.get(k) for r in rows] for k in ("x1", "x2", "color", "note")}


def test_arrow_tables_and_lists_of_dicts_encode_like_the_csv_file(table):
    state, entry, path, expected = table
    for form, value in (("Arrow table", pa.table(columns_of(ROWS))),
                        ("Arrow record batch", pa.RecordBatch.from_pydict(columns_of(ROWS))),
                        ("dictionary-encoded Arrow", pa.table({**columns_of(ROWS), "color": pa.array(
                            columns_of(ROWS)["color"]).dictionary_encode()})),
                        ("list of dicts", ROWS),
                        ("dicts without a missing key", [{k: v for k, v in r.items() if v is not None} for r in ROWS]),
                        ("numbers as text", [{**r, "x1": str(r["x1"])} for r in ROWS]),
                        ("mixed numbers and text", [{**r, "x1": str(r["x1"]) if i % 2 else r["x1"]}
                                                    for i, r in enumerate(ROWS)]),
                        ("NaN for missing", [{**r, "x2": float("nan") if r["x2"] is None else r["x2"]} for r in ROWS])):
        x, names = table_inputs(value, state, entry)
        assert x.dtype == np.float32
        np.testing.assert_array_equal(x, expected, err_msg=form)
        assert names == ["row 1", "row 2", "row 3", "row 4"]


def test_a_dataframe_encodes_like_the_csv_file(table):
    pd = pytest.importorskip("pandas")
    state, entry, path, expected = table
    frame = pd.DataFrame(ROWS)
    for form, value in (("DataFrame", frame), ("read_csv", pd.read_csv(path)),
                        ("categorical dtype", frame.astype({"color": "category"})),
                        ("object column of mixed types", frame.astype({"x1": object}).assign(
                            x1=lambda f: [str(v) if i % 2 else v for i, v in enumerate(f["x1"])]))):
        x, names = table_inputs(value, state, entry)
        np.testing.assert_array_equal(x, expected, err_msg=form)
        assert names == [0, 1, 2, 3]  # the frame's index, so answers line up with its rows


def test_a_dataframes_rows_are_named_by_its_index(table):
    pd = pytest.importorskip("pandas")
    state, entry, _, expected = table
    frame = pd.DataFrame(ROWS, index=pd.Index(["ann", "bob", "cy", "di"], name="who"))
    x, names = table_inputs(frame, state, entry)
    np.testing.assert_array_equal(x, expected)
    assert names == ["ann", "bob", "cy", "di"]
    _, names = table_inputs(frame.iloc[::-1].set_axis([40, 30, 20, 10]), state, entry)
    assert names == [40, 30, 20, 10] and all(type(n) is int for n in names)  # numpy ints unwrapped: JSON-ready
    _, names = table_inputs(frame, state, entry.model_copy(update={"missing": "drop"}))
    assert names == ["ann", "di"]  # rows dropped for a missing value keep their own labels
    _, names = table_inputs([frame, frame], state, entry)
    assert names == ["ann", "bob", "cy", "di"] * 2


def test_files_and_several_tables_in_one_call(table, root):
    state, entry, path, expected = table
    parquet = root / "rows.parquet"
    pq.write_table(pa.table(columns_of(ROWS)), parquet)
    x, names = table_inputs([path, str(parquet), pa.table(columns_of(ROWS))], state, entry)
    np.testing.assert_array_equal(x, np.concatenate([expected] * 3))
    assert names[:4] == [f"{path}:{line}" for line in range(2, 6)]
    assert names[4] == f"{parquet}:row 1" and names[8:] == [f"table[2] row {k}" for k in range(1, 5)]


def test_missing_drop_drops_the_same_rows_as_for_the_file(table):
    state, entry, path, _ = table
    drop = entry.model_copy(update={"missing": "drop"})
    expected, file_names = encode_rows(str(path), state, drop)
    x, names = table_inputs(ROWS, state, drop)
    np.testing.assert_array_equal(x, expected)
    assert [n.rsplit(":", 1)[1] for n in file_names] == ["2", "5"] and names == ["row 1", "row 4"]


def test_bad_tables_give_one_line(table):
    state, entry, _, _ = table
    cases = [
        ([{k: v for k, v in r.items() if k != "x2"} for r in ROWS], ("input table: no column 'x2'",
                                                                     "trained on x1, x2, color")),
        (pa.table({"x1": [1.0], "colour": ["red"], "x2": [1.0]}), ("no column 'color'",)),
        ([pa.table(columns_of(ROWS)), pa.table({"x1": [1.0]})], ("table[1]: no columns 'x2', 'color' (the",)),
        ([{**ROWS[0]}, {**ROWS[1], "x1": "abc"}], ("row 2, column 'x1': 'abc' is not a number",)),
        (pa.table({"x1": [[1.0]], "x2": [1.0], "color": ["red"]}), ("column 'x1' holds list<item: double>",)),
        (pa.Table.from_arrays([pa.array([1.0])] * 3 + [pa.array(["red"])], ["note", "x1", "x2", "color"])
         .append_column("x1", pa.array([2.0])), ("column 'x1' appears more than once",)),
        ([ROWS[0], "x1=3"], ("input[1]: a str among dicts",)),
        (42, ("input: an int is not a table", "DataFrame", "pyarrow Table", "list of dicts")),
        ([pa.table(columns_of(ROWS)), {1, 2}], ("input[1]: a set is not a table",)),
        ([], ("no rows given",)),
        (pa.table({"x1": pa.array([], pa.float64()), "x2": pa.array([], pa.float64()),
                   "color": pa.array([], pa.string())}), ("input table: no rows",)),
    ]
    for bad, fragments in cases:
        with pytest.raises(DlcliError) as err:
            table_inputs(bad, state, entry)
        one_line(err, *fragments)


def test_text_runs_take_strings_and_tables_of_their_column(root):
    texts = write_texts(root / "text.csv", n=60)
    run = train(root / "text-runs", CONFIGS / "text_csv.yaml", f"data.train_file={texts}", "train.epochs=1",
                "model.hidden_size=8", "model.embedding_dim=8")
    info = read_data_info(run)
    state = {k: v for k, v in info["preprocessing"].items() if k != "kind"}
    entry = load_run(run, device="cpu").cfg.data
    wanted = ["Pizza and bread", "robot CHIP zzzunknown"]
    ids, names = text_inputs(wanted, entry, state)
    vocab = state["vocab"]
    assert names == wanted and ids.dtype == np.int64 and ids.shape == (2, entry.max_length)
    assert [vocab[i] for i in ids[1][:3]] == ["robot", "chip", "<unk>"]
    np.testing.assert_array_equal(text_inputs(wanted[0], entry, state)[0], ids[:1])
    np.testing.assert_array_equal(text_inputs(np.array(wanted), entry, state)[0], ids)
    np.testing.assert_array_equal(text_inputs([{"text": t, "other": 1} for t in wanted], entry, state)[0], ids)
    np.testing.assert_array_equal(text_inputs(pa.table({"text": wanted}), entry, state)[0], ids)
    with open(texts, newline="") as f:
        rows = list(csv.reader(f))[1:4]
    from_csv = text_inputs(pa.table({"text": [r[0] for r in rows]}), entry, state)[0]
    np.testing.assert_array_equal(from_csv, text_inputs([r[0] for r in rows], entry, state)[0])
    for bad, fragments in (([wanted[0], 3], ("input[1]: an int is not a text", "strings")),
                           (["fine", "  ... "], ("text[1] is empty",)),
                           (pa.table({"body": wanted}), ("no column 'text'",)),
                           ([], ("no text given",))):
        with pytest.raises(DlcliError) as err:
            text_inputs(bad, entry, state)
        one_line(err, *fragments)
