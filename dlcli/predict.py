"""`dlcli predict`: image files, table rows or texts -> the model's input, the way training saw it -> the task's
answer (top-k classes, a number per target, or a set of labels; dlcli.tasks).

Images are decoded by dlcli.data.images, the module training uses for image folders, so a file gives the
same tensor here as in training. Images are decoded and sent through the model in batches. Nothing here imports torchvision or matplotlib.
"""

from __future__ import annotations

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

    @property
    def top(self) -> list[dict] | None:
        return self.answer.get("top")

    def to_json(self, key: str = "image") -> dict:
        return {key: self.image, **self.answer}


def expand_inputs(paths: list[str]) -> tuple[list[str], list[tuple[str, str]]]:
    """Files as given, directories expanded to their image files (by extension, sorted by name, not recursive).

    Returns (files, [(path, problem)]) so one missing path does not stop the others.
    """
    return image_files(paths)


def predict_files(run: Path, inputs: list[str], top_k: int = 5, invert: bool = False, checkpoint: str = "best",
                  device: str = "cpu", on_result=None, on_problem=None, batch_size: int = BATCH) -> tuple[list, int]:
    """Predict every readable image; returns (predictions in input order, number of inputs that failed).

    on_result(Prediction) is called as each batch finishes; on_problem(path, reason) for each failure and
    on_problem(None, message) for warnings.
    """
    import torch

    from dlcli.loaded import check_image_run, load_run, read_data_info

    if top_k < 1:
        raise DlcliError(f"--top-k must be at least 1, not {top_k}", BAD_INPUT)
    info = read_data_info(run)
    shape = check_image_run(info, run.name)
    files, problems = expand_inputs(inputs)
    if not files and not problems:
        raise DlcliError("no images given", BAD_INPUT)
    loaded = load_run(run, checkpoint, device, info=info)
    report = on_problem or (lambda path, reason: None)
    for path, reason in problems:
        report(path, reason)
    failed = len(problems)
    k = min(top_k, len(loaded.classes))
    results = []
    for start in range(0, len(files), batch_size):
        names, tensors = [], []
        for path in files[start : start + batch_size]:
            try:
                tensors.append(load_image(path, shape, invert, warn=lambda msg: report(None, msg)))
                names.append(path)
            except ImageError as err:
                report(path, str(err))
                failed += 1
        if not tensors:
            continue
        for name, answer in zip(names, loaded.answers(torch.stack(tensors), k, batch_size)):
            pred = Prediction(name, answer, loaded.task)
            results.append(pred)
            if on_result is not None:
                on_result(pred)
    return results, failed


def ranked(probs, classes: list[str], top_k: int) -> list[list[dict]]:
    """Each row of class probabilities as its top-k [{index, label, probability}], best first."""
    from dlcli.tasks.classification import ranked as top

    return top(probs, classes, top_k)


def render(pred: Prediction, console) -> None:
    pred.task.render_answer(pred.image, pred.answer, console)


def predict_records(run: Path, inputs: list[str], top_k: int = 5, checkpoint: str = "best", device: str = "cpu",
                    text_file: str | None = None) -> list[Prediction]:
    """Predictions for a run trained on table rows (inputs are CSV or Parquet files) or text (inputs are the texts themselves,
    plus one per line of text_file), preprocessed with the run's stored columns, categories or vocabulary."""
    import torch

    from dlcli.loaded import load_run, read_data_info

    if top_k < 1:
        raise DlcliError(f"--top-k must be at least 1, not {top_k}", BAD_INPUT)
    info = read_data_info(run)
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
    else:
        from dlcli.data.tables import encode_rows

        if text_file:
            raise DlcliError(f"run {run.name} was trained on a table: pass CSV or Parquet files, not --text-file")
        if not inputs:
            raise DlcliError("no CSV or Parquet file given")
        blocks, names = [], []
        for path in inputs:
            x_part, row_names = encode_rows(path, state, loaded.cfg.data)
            blocks.append(torch.from_numpy(x_part))
            names += row_names
        x = torch.cat(blocks)
    return [Prediction(name, answer, loaded.task) for name, answer in zip(names, loaded.answers(x, top_k))]


def predict_objects(loaded, inputs, top_k: int = 5, invert: bool = False) -> list[dict]:
    """The Python API's predict: what a Python user holds (paths, PIL images, arrays, tensors, DataFrames, Arrow
    tables, lists of dicts, strings; dlcli.inputs) through the run's preprocessing -> one answer per input, as
    `dlcli predict --json` gives it. An unreadable input is an error naming it (the API has no partial results)."""
    import torch

    from dlcli.inputs import image_inputs, table_inputs, text_inputs
    from dlcli.loaded import check_image_run, data_kind, read_data_info

    if top_k < 1:
        raise DlcliError(f"top_k must be at least 1, not {top_k}", BAD_INPUT)
    info = read_data_info(loaded.path)
    kind = data_kind(info)
    state = {k: v for k, v in (info["preprocessing"] or {}).items() if k != "kind"}
    if kind == "image":
        x, names, problems = image_inputs(inputs, check_image_run(info, loaded.path.name), invert)
        if problems:
            name, reason = problems[0]
            raise DlcliError(f"{name}: {reason}", BAD_INPUT)
        key = "image"
    elif kind == "text":
        ids, names = text_inputs(inputs, loaded.cfg.data, state)
        x, key = torch.from_numpy(ids), "text"
    else:
        rows, names = table_inputs(inputs, state, loaded.cfg.data)
        x, key = torch.from_numpy(rows), "row"
    if len(x) == 0:
        raise DlcliError("no inputs given", BAD_INPUT)
    return [{key: name, **answer} for name, answer in zip(names, loaded.answers(x, min(top_k, len(loaded.classes))))]
