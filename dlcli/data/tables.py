"""Your own CSV files: `csv` (a table of features) and `text_csv` (a text column), both with a label column.

Reading gives records; the preprocessing (category lists and fill values, or the vocabulary) is fitted on the
training split only, stored in the run's data.json, and restored from there by evaluate and predict, so a run
always sees its inputs exactly as in training.
"""

from __future__ import annotations

import csv
import math
import re
from collections import Counter
from pathlib import Path

from dlcli.errors import DlcliError

PAD, UNK = "<pad>", "<unk>"  # token ids 0 and 1


def read_csv(path: str | Path, required: list[str]) -> tuple[list[str], list[dict]]:
    """(header, rows as dicts); one clear line for a missing file, an empty file or a missing column."""
    path = Path(path)
    if not path.is_file():
        raise DlcliError(f"{path}: no such CSV file")
    try:
        with open(path, newline="", encoding="utf-8-sig") as f:
            reader = csv.DictReader(f)
            header = list(reader.fieldnames or [])
            rows = list(reader)
    except UnicodeDecodeError:
        raise DlcliError(f"{path}: not a UTF-8 text file") from None
    except csv.Error as err:
        raise DlcliError(f"{path}: malformed CSV ({err})") from None
    if not header:
        raise DlcliError(f"{path}: empty CSV file (no header row)")
    for column in required:
        if column not in header:
            from dlcli.errors import closest

            raise DlcliError(f"{path}: no column '{column}'{closest(column, header)}")
    if not rows:
        raise DlcliError(f"{path}: no data rows under the header")
    return header, rows


def _number(text: str) -> float | None:
    try:
        value = float(text)
    except ValueError:
        return None
    return value if math.isfinite(value) else None


def _missing(text) -> bool:
    return text is None or str(text).strip() in ("", "NA", "NaN", "nan", "null", "None", "?")


def label_names(values: list[str]) -> list[str]:
    """Class names in a stable order: numerically when every label is a number, else alphabetically."""
    unique = set(values)
    if all(_number(v) is not None for v in unique):
        return sorted(unique, key=float)
    return sorted(unique)


class TablePreprocessor:
    """Numeric columns filled (training mean) and later standardised; categorical columns one-hot encoded."""

    kind = "tabular"

    def __init__(self, data_cfg, header: list[str] | None, state: dict | None = None):
        self.cfg = data_cfg
        if state is not None:  # restored from a run: the fitted columns are the features
            header = [*state["numeric"], *state["categories"]]
        features = [c for c in header if c != data_cfg.label_column]
        if not features:
            raise DlcliError(f"{data_cfg.train_file}: no feature columns besides '{data_cfg.label_column}'")
        self.features = features
        self.state = state  # set by fit, or restored from a run

    def fit(self, rows: list[dict], source: str) -> None:
        categorical = self.cfg.categorical
        if categorical == "auto":
            categorical = [c for c in self.features if not self._mostly_numeric(rows, c)]
        for c in categorical:
            if c not in self.features:
                raise DlcliError(f"data.categorical: '{c}' is not a feature column of {source}")
        numeric = [c for c in self.features if c not in categorical]
        fill = {}
        for c in numeric:
            values = []
            for i, row in enumerate(rows):
                if _missing(row[c]):
                    continue
                value = _number(row[c])
                if value is None:
                    raise DlcliError(f"{source}: line {i + 2}, column '{c}': '{row[c]}' is not a number "
                                     f"(fix it, or list '{c}' in data.categorical)")
                values.append(value)
            fill[c] = sum(values) / len(values) if values else 0.0
        categories = {c: sorted({str(row[c]).strip() for row in rows if not _missing(row[c])}) for c in categorical}
        self.state = {"numeric": numeric, "fill": fill, "categories": categories}

    @staticmethod
    def _mostly_numeric(rows, column) -> bool:
        present = [row[column] for row in rows if not _missing(row[column])]
        numbers = sum(_number(v) is not None for v in present)
        return bool(present) and numbers >= 0.9 * len(present)  # a few stray words are errors, not categories

    @property
    def width(self) -> int:
        return len(self.state["numeric"]) + sum(len(v) + 1 for v in self.state["categories"].values())

    def unscaled(self) -> list[int]:
        """Feature positions that are one-hot indicators: left as 0/1 by the normaliser."""
        return list(range(len(self.state["numeric"]), self.width))

    def encode(self, rows: list[dict], source: str, lines: list[int] | None = None):
        """(float tensor (N, F), kept row indices); the missing-value policy decides what a gap does.

        lines: each row's line number in its file, for errors (default: rows follow the header in order).
        """
        import torch

        lines = lines or list(range(2, len(rows) + 2))

        numeric, fill, categories = self.state["numeric"], self.state["fill"], self.state["categories"]
        policy = self.cfg.missing
        out, kept = [], []
        for i, row in enumerate(rows):
            gaps = [c for c in (*numeric, *categories) if _missing(row.get(c))]
            if gaps and policy == "error":
                raise DlcliError(f"{source}: line {lines[i]}, column '{gaps[0]}' is empty "
                                 f"(data.missing: error; use fill or drop to accept gaps)")
            if gaps and policy == "drop":
                continue
            values = []
            for c in numeric:
                value = fill[c] if _missing(row.get(c)) else _number(row[c])
                if value is None:
                    raise DlcliError(f"{source}: line {lines[i]}, column '{c}': '{row[c]}' is not a number")
                values.append(value)
            for c, names in categories.items():
                onehot = [0.0] * (len(names) + 1)  # the last slot: missing or never seen in training
                text = None if _missing(row.get(c)) else str(row[c]).strip()
                onehot[names.index(text) if text in names else len(names)] = 1.0
                values += onehot
            out.append(values)
            kept.append(i)
        if not out:
            raise DlcliError(f"{source}: every row has a missing value (data.missing: drop)")
        return torch.tensor(out, dtype=torch.float32), kept


def tokenize(text: str, lowercase: bool, pattern: str) -> list[str]:
    return re.findall(pattern, text.lower() if lowercase else text)


class TextPreprocessor:
    """A word-level tokenizer and a vocabulary fitted on the training split; ids 0 and 1 are <pad> and <unk>."""

    kind = "text"

    def __init__(self, data_cfg, header=None, state: dict | None = None):
        self.cfg = data_cfg
        self.state = state

    def fit(self, rows: list[dict], source: str) -> None:
        tok = self.cfg.tokenizer
        counts = Counter()
        for row in rows:
            counts.update(tokenize(row[self.cfg.text_column] or "", tok.lowercase, tok.pattern))
        vocab = self.cfg.vocab
        words = [w for w, n in sorted(counts.items(), key=lambda kv: (-kv[1], kv[0])) if n >= vocab.min_freq]
        self.state = {"vocab": [PAD, UNK] + words[: vocab.max_size]}

    @property
    def width(self) -> int:
        return self.cfg.max_length

    @property
    def vocab_size(self) -> int:
        return len(self.state["vocab"])

    def ids(self, texts: list[str], source: str):
        """(int64 tensor (N, max_length) padded with 0, kept indices); an empty text is a clear error."""
        import torch

        tok, limit = self.cfg.tokenizer, self.cfg.max_length
        index = {w: i for i, w in enumerate(self.state["vocab"])}
        out = torch.zeros((len(texts), limit), dtype=torch.long)
        for i, text in enumerate(texts):
            tokens = tokenize(text or "", tok.lowercase, tok.pattern)[:limit]
            if not tokens:
                raise DlcliError(f"{source}: text {i + 1} is empty (no tokens matching {tok.pattern!r})")
            out[i, : len(tokens)] = torch.tensor([index.get(t, 1) for t in tokens])
        return out

    def encode(self, rows: list[dict], source: str, lines: list[int] | None = None):
        return self.ids([row[self.cfg.text_column] for row in rows], source), list(range(len(rows)))


def preprocessor_for(data_cfg, header, state=None):
    cls = TextPreprocessor if data_cfg.dataset == "text_csv" else TablePreprocessor
    return cls(data_cfg, header, state)


def read_table_dataset(data_cfg) -> dict:
    """The CSV files as records and labels (class indices); the preprocessing is fitted later, on train only."""
    label = data_cfg.label_column
    required = [label] + ([data_cfg.text_column] if data_cfg.dataset == "text_csv" else [])
    header, train_rows = read_csv(data_cfg.train_file, required)
    test_rows = None
    if data_cfg.test_file:
        test_header, test_rows = read_csv(data_cfg.test_file, required)
        missing = [c for c in header if c not in test_header]
        if missing:
            raise DlcliError(f"{data_cfg.test_file}: no column '{missing[0]}' (the train file has it)")
    text = data_cfg.text_column if data_cfg.dataset == "text_csv" else None
    for source, rows in ((data_cfg.train_file, train_rows), (data_cfg.test_file, test_rows or [])):
        for i, row in enumerate(rows):
            if _missing(row.get(label)):
                raise DlcliError(f"{source}: line {i + 2} has no value in label column '{label}'")
            if text and (row.get(text) is None or not row[text].strip()):
                raise DlcliError(f"{source}: line {i + 2}, column '{text}' is empty")
            if data_cfg.missing == "error":
                gap = next((c for c in row if c != label and _missing(row[c])), None)
                if gap is not None:
                    raise DlcliError(f"{source}: line {i + 2}, column '{gap}' is empty "
                                     f"(data.missing: error; use fill or drop to accept gaps)")
    classes = label_names([r[label].strip() for r in train_rows])
    if len(classes) < 2:
        raise DlcliError(f"{data_cfg.train_file}: label column '{label}' has only one class ({classes[0]})")
    index = {c: i for i, c in enumerate(classes)}
    if test_rows:
        unseen = sorted({r[label].strip() for r in test_rows} - set(index))
        if unseen:
            raise DlcliError(f"{data_cfg.test_file}: label '{unseen[0]}' does not occur in the train file")
    to_y = lambda rows: [index[r[label].strip()] for r in rows]  # noqa: E731
    return {"header": header, "train": (train_rows, to_y(train_rows)), "classes": classes,
            "test": (test_rows, to_y(test_rows)) if test_rows else None}

