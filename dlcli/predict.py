"""`dlcli predict`: image files, table rows or texts -> the model's input, the way training saw it -> the task's
answer (top-k classes, a number per target, or a set of labels; dlcli.tasks).

Images are decoded by dlcli.data.images, the module training uses for image folders, so a file gives the
same tensor here as in training. Images are decoded and sent through the model in batches. Nothing here imports torchvision or matplotlib.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

from dlcli.data.images import ImageError, image_files, load_image
from dlcli.errors import BAD_INPUT, DlcliError

BATCH = 256


@dataclass
class Prediction:
    image: str  # the input's name: an image path, a `file:line` row, a text
    answer: dict  # the task's answer: {"top": [...]}, {"prediction": ...} or {"labels": [...], "probabilities": {...}}
    task: object = None  # the run's task, which renders the answer
    source: str | None = None  # the picture's file, for a task that draws its answer on it (predict --save)

    @property
    def top(self) -> list[dict] | None:
        return self.answer.get("top")

    def to_json(self, key: str = "image") -> dict:
        return {key: self.image, **self.answer}


STDIN = "-"
MAX_STDIN_BYTES = 1 << 30  # what `predict -` reads at most: a table or an image, not a stream without end


def stdin_inputs(inputs: list[str], kind: str | None, stream=None):
    """`dlcli predict -`: stdin in place of a file, holding what the run's kind reads from one: CSV rows under their
    header (or a Parquet file) for table, sequence and forecast runs, one text a line for text runs, one image's bytes
    (any format PIL reads) for image runs. Returns (the inputs with `-` replaced, by the texts or by a temporary file
    of stdin's bytes, and a function that names that file `stdin` in the answers: `stdin:2` for its first row)."""
    import sys
    import tempfile

    if STDIN not in inputs:
        return inputs, lambda name: name
    if inputs.count(STDIN) > 1:
        raise DlcliError("`-` (stdin) can be given once", BAD_INPUT)
    data = (stream or sys.stdin.buffer).read(MAX_STDIN_BYTES + 1)
    if len(data) > MAX_STDIN_BYTES:
        raise DlcliError(f"stdin: more than {MAX_STDIN_BYTES >> 20:,} MiB; pass a file instead", BAD_INPUT)
    if not data.strip():
        raise DlcliError("stdin is empty: pipe CSV rows (table runs), texts (text runs) or an image's bytes (image "
                         "runs) into `dlcli predict -`", BAD_INPUT)
    at = inputs.index(STDIN)
    if kind == "text":
        try:
            texts = [line for line in data.decode("utf-8").splitlines() if line.strip()]
        except UnicodeDecodeError:
            raise DlcliError("stdin: a text run reads UTF-8 text, one text a line", BAD_INPUT) from None
        return inputs[:at] + texts + inputs[at + 1:], lambda name: name
    folder = tempfile.TemporaryDirectory(prefix="dlcli-stdin-")  # removed when the renaming function is gone
    rows = kind in ("tabular", "sequences", "series")  # else an image run (its preprocessing has no rows)
    suffix = "" if not rows else ".parquet" if data[:4] == b"PAR1" else ".npz" if data[:2] == b"PK" else ".csv"
    path = Path(folder.name) / f"stdin{suffix}"
    path.write_bytes(data)

    def named(name, _keep=folder):
        return name.replace(str(path), "stdin") if isinstance(name, str) else name

    return inputs[:at] + [str(path)] + inputs[at + 1:], named


def expand_inputs(paths: list[str]) -> tuple[list[str], list[tuple[str, str]]]:
    """Files as given, directories expanded to their image files (by extension, sorted by name, not recursive).

    Returns (files, [(path, problem)]) so one missing path does not stop the others.
    """
    return image_files(paths)


def input_kind(item) -> str | None:
    """What a command-line input is by its name: 'image' (an image file name, or a folder of images), 'table' (a
    .csv/.parquet file, or a folder of them) or None (a text, or a name that tells nothing)."""
    from dlcli.data.images import IMAGE_EXTENSIONS
    from dlcli.data.tables import FORMATS

    path = Path(item)
    suffix = path.suffix.lower()
    if suffix in IMAGE_EXTENSIONS:
        return "image"
    if suffix in FORMATS:
        return "table"
    if path.is_dir():
        suffixes = {p.suffix.lower() for p in path.iterdir() if p.is_file()}
        return "image" if suffixes & IMAGE_EXTENSIONS else "table" if suffixes & set(FORMATS) else None
    return None


def check_inputs(run: Path, kind: str, inputs, choose: str = "pass --run with") -> None:
    """Inputs meant for another kind of run (an image for a table run, a CSV for an image run, a file for a text
    run) are one error naming the run, what it takes and a run that takes them, before a file is parsed as what
    it is not (a PNG read as CSV). Inputs whose kind the run may take (a sequence run reads CSV) pass."""
    from dlcli.loaded import wrong_kind

    for item in inputs:
        if not isinstance(item, (str, os.PathLike)):
            continue
        given = input_kind(item)
        if given == "image" and kind != "image" and (kind != "text" or Path(item).exists()):
            raise wrong_kind(run, kind, "image", choose)
        if given == "table" and kind in ("image", "text") and (kind != "text" or Path(item).exists()):
            raise wrong_kind(run, kind, "table", choose)


def predict_files(run: Path, inputs: list[str], top_k: int = 5, invert: bool = False, checkpoint: str = "best",
                  device: str = "cpu", on_result=None, on_problem=None, batch_size: int = BATCH,
                  conf: float | None = None, iou: float | None = None) -> tuple[list, int]:
    """Predict every readable image; returns (predictions in input order, number of inputs that failed).

    on_result(Prediction) is called as each batch finishes; on_problem(path, reason) for each failure and
    on_problem(None, message) for warnings.
    """
    import torch

    from dlcli.loaded import check_image_run, data_kind, load_run, read_data_info

    if top_k < 1:
        raise DlcliError(f"--top-k must be at least 1, not {top_k}", BAD_INPUT)
    info = read_data_info(run)
    check_inputs(run, data_kind(info), inputs)
    shape = check_image_run(info, run.name)
    files, problems = expand_inputs(inputs)
    if not files and not problems:
        raise DlcliError("no images given", BAD_INPUT)
    loaded = with_thresholds(load_run(run, checkpoint, device, info=info), conf, iou)
    report = on_problem or (lambda path, reason: None)
    for path, reason in problems:
        report(path, reason)
    failed = len(problems)
    k = min(top_k, len(loaded.classes))
    results = []
    for start in range(0, len(files), batch_size):
        names, tensors, sizes = [], [], []
        for path in files[start : start + batch_size]:
            try:
                tensors.append(load_image(path, shape, invert, warn=lambda msg: report(None, msg), sizes=sizes))
                names.append(path)
            except ImageError as err:
                report(path, str(err))
                failed += 1
        if not tensors:
            continue
        for name, answer in zip(names, loaded.answers(torch.stack(tensors), k, batch_size, sizes)):
            pred = Prediction(name, answer, loaded.task, source=name)
            results.append(pred)
            if on_result is not None:
                on_result(pred)
    return results, failed


def save_answers(results: list, folder: str) -> list[str]:
    """`dlcli predict --save FOLDER`: each answer written by its task (a mask PNG per picture, named as the picture;
    a second picture of the same name gets -2, and so on); the paths written. A task whose answers hold nothing to
    write is a one-line error, before the folder is made."""
    written, seen = [], {}
    for pred in results:
        stem = Path(str(pred.image)).stem
        seen[stem] = seen.get(stem, 0) + 1
        name = pred.image if seen[stem] == 1 else f"{stem}-{seen[stem]}"  # a.png from two folders: a, a-2
        try:
            found = pred.task.save_answer(name, pred.answer, folder, source=pred.source)
        except OSError as err:
            raise DlcliError(f"--save {folder}: cannot write there ({err.strerror or err})") from None
        if not found:
            raise DlcliError(f"--save: a {pred.task.entry_name} run's answers are JSON only (nothing to draw or "
                             "write); use --json", BAD_INPUT)
        written += found
    return written


def ranked(probs, classes: list[str], top_k: int) -> list[list[dict]]:
    """Each row of class probabilities as its top-k [{index, label, probability}], best first."""
    from dlcli.tasks.classification import ranked as top

    return top(probs, classes, top_k)


def render(pred: Prediction, console) -> None:
    pred.task.render_answer(pred.image, pred.answer, console)


COMPACT_OVER = 3  # `dlcli predict` shows more inputs than this one line each (render_line), fewer as full answers


def render_line(pred: Prediction, console) -> None:
    """One line: the input's name, then its answer in short (the task's answer_line); never wrapped, so a long path
    stays whole and each line is one input."""
    console.print(f"{pred.image}  {pred.task.answer_line(pred.answer)}", soft_wrap=True, markup=False,
                  highlight=False)


def predict_records(run: Path, inputs: list[str], top_k: int = 5, checkpoint: str = "best", device: str = "cpu",
                    text_file: str | None = None) -> list[Prediction]:
    """Predictions for a run trained on table rows (inputs are CSV or Parquet files) or text (inputs are the texts themselves,
    plus one per line of text_file), preprocessed with the run's stored columns, categories or vocabulary."""
    import torch

    from dlcli.loaded import data_kind, load_run, read_data_info

    if top_k < 1:
        raise DlcliError(f"--top-k must be at least 1, not {top_k}", BAD_INPUT)
    info = read_data_info(run)
    check_inputs(run, data_kind(info), inputs)
    state = {k: v for k, v in (info["preprocessing"] or {}).items() if k != "kind"}
    loaded = load_run(run, checkpoint, device, info=info)
    if info["preprocessing"].get("kind") == "text":
        from dlcli.data.text import TextEncoder

        texts = list(inputs)
        if text_file:
            try:
                texts += [line for line in Path(text_file).read_text(encoding="utf-8").splitlines() if line.strip()]
            except (OSError, UnicodeDecodeError) as err:
                raise DlcliError(f"--text-file {text_file}: cannot read it ({err})") from None
        if not texts:
            raise DlcliError("no text given: pass texts as arguments or --text-file FILE")
        ids = TextEncoder(loaded.cfg.data, state).ids(texts, lambda i: f"input: text {i + 1}")
        x, names = torch.from_numpy(ids), texts
    elif info["preprocessing"].get("kind") == "sequences":
        from dlcli.data.sequences import encode_series

        if text_file or not inputs:
            raise DlcliError(f"run {run.name} was trained on sequences: pass .npz, CSV or Parquet files of series")
        x, names = _encoded_files(inputs, encode_series, state, loaded.cfg.data)
    else:
        from dlcli.data.tables import encode_rows

        if text_file:
            raise DlcliError(f"run {run.name} was trained on a table: pass CSV or Parquet files, not --text-file")
        if not inputs:
            raise DlcliError("no CSV or Parquet file given")
        x, names = _encoded_files(inputs, encode_rows, state, loaded.cfg.data)
    return [Prediction(name, answer, loaded.task) for name, answer in zip(names, loaded.answers(x, top_k))]


def predict_history(run: Path, inputs: list[str], checkpoint: str = "best", device: str = "cpu") -> list[Prediction]:
    """A forecast run: each CSV/Parquet history file's series -> the `horizon` steps after its end, timestamped."""
    from dlcli.data.series import forecast_history
    from dlcli.loaded import data_kind, load_run, read_data_info

    if not inputs:
        raise DlcliError("no history file given: pass a CSV or Parquet file of the series (time, value, id columns "
                         "as in training)")
    info = read_data_info(run)
    check_inputs(run, data_kind(info), inputs)
    loaded = load_run(run, checkpoint, device, info=info)
    return [Prediction(found["series"], {"forecast": found["forecast"]}, loaded.task)
            for path in inputs for found in forecast_history(loaded, path, info["preprocessing"])]


def with_thresholds(loaded, conf: float | None, iou: float | None):
    """The loaded run answering with --conf and --iou (detection), as a copy sharing its model."""
    from dataclasses import replace

    task = loaded.task.thresholded(conf, iou)
    return loaded if task is loaded.task else replace(loaded, task=task)


def predict_objects(loaded, inputs, top_k: int = 5, invert: bool = False, conf: float | None = None,
                    iou: float | None = None) -> list[dict]:
    """The Python API's predict: what a Python user holds (paths, PIL images, arrays, tensors, DataFrames, Arrow
    tables, lists of dicts, strings; dlcli.inputs) through the run's preprocessing -> one answer per input, as
    `dlcli predict --json` gives it. An unreadable input is an error naming it (the API has no partial results)."""
    loaded = with_thresholds(loaded, conf, iou)
    import torch

    from dlcli.inputs import image_inputs, table_inputs, text_inputs
    from dlcli.loaded import check_image_run, data_kind, read_data_info

    if top_k < 1:
        raise DlcliError(f"top_k must be at least 1, not {top_k}", BAD_INPUT)
    info = read_data_info(loaded.path)
    if (info["preprocessing"] or {}).get("kind") == "series":  # history files -> the horizon after each series
        from dlcli.data.series import forecast_history

        paths = list(inputs) if isinstance(inputs, (list, tuple)) else [inputs]
        if not paths or not all(isinstance(p, (str, os.PathLike)) for p in paths):
            raise DlcliError("a forecast run takes the paths of CSV or Parquet history files", BAD_INPUT)
        return [found for p in paths for found in forecast_history(loaded, str(p), info["preprocessing"])]
    kind = data_kind(info)
    check_inputs(loaded.path, kind, inputs if isinstance(inputs, (list, tuple)) else [inputs], "load")
    state = {k: v for k, v in (info["preprocessing"] or {}).items() if k != "kind"}
    sizes = []  # each picture's own (height, width): spatial answers are given in its pixels
    if kind == "image":
        x, names, problems = image_inputs(inputs, check_image_run(info, loaded.path.name), invert, sizes=sizes)
        if problems:
            name, reason = problems[0]
            raise DlcliError(f"{name}: {reason}", BAD_INPUT)
        key = "image"
    elif kind == "text":
        ids, names = text_inputs(inputs, loaded.cfg.data, state)
        x, key = torch.from_numpy(ids), "text"
    elif kind == "sequence":
        from dlcli.inputs import sequence_inputs

        series, names = sequence_inputs(inputs, state, loaded.cfg.data)
        x, key = torch.from_numpy(series), "series"
    else:
        rows, names = table_inputs(inputs, state, loaded.cfg.data)
        x, key = torch.from_numpy(rows), "row"
    if len(x) == 0:
        raise DlcliError("no inputs given", BAD_INPUT)
    answers = loaded.answers(x, min(top_k, len(loaded.classes)), sizes=sizes or None)
    return [{key: name, **loaded.task.for_python(answer)} for name, answer in zip(names, answers)]


def _encoded_files(paths, encode, state: dict, data_cfg):
    """(one input tensor, a name per row) of files read by `encode(path, state, data_cfg) -> (array, names)`."""
    import torch

    blocks, names = [], []
    for path in paths:
        part, part_names = encode(path, state, data_cfg)
        blocks.append(torch.from_numpy(part))
        names += part_names
    return torch.cat(blocks), names
