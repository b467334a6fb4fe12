"""`text_csv`: a word-level tokenizer and a vocabulary fitted on the training split; ids 0 and 1 are <pad> and <unk>.

Rows come from dlcli.data.tables (Arrow); tokenising stays a regular expression per text, which is all the work there
is for the texts these models read.
"""

from __future__ import annotations

import re
from collections import Counter

import numpy as np

from dlcli.errors import DataError

PAD, UNK = "<pad>", "<unk>"  # token ids 0 and 1


def tokenize(text: str, lowercase: bool, pattern: str) -> list[str]:
    return re.findall(pattern, text.lower() if lowercase else text)


class TextEncoder:
    kind = "text"
    dtype = np.int64

    def __init__(self, entry, state: dict | None = None):
        self.entry, self.state = entry, state

    def _texts(self, chunk, mask=None) -> list[str]:
        from dlcli.data.columns import as_strings

        column = as_strings(chunk.table.column(self.entry.text_column))
        if mask is not None:
            import pyarrow as pa

            column = column.filter(pa.array(mask))
        return [t or "" for t in column.to_pylist()]

    def fit(self, chunks, train_of) -> None:
        tok = self.entry.tokenizer
        counts = Counter()
        for chunk in chunks:
            for text in self._texts(chunk, train_of(chunk)):
                counts.update(tokenize(text, tok.lowercase, tok.pattern))
        vocab = self.entry.vocab
        words = [w for w, n in sorted(counts.items(), key=lambda kv: (-kv[1], kv[0])) if n >= vocab.min_freq]
        self.state = {"vocab": [PAD, UNK] + words[: vocab.max_size]}

    @property
    def width(self) -> int:
        return self.entry.max_length

    @property
    def vocab_size(self) -> int:
        return len(self.state["vocab"])

    def ids(self, texts: list[str], name) -> np.ndarray:
        """int64 ids (N, max_length) padded with 0; a text without tokens is an error naming it (name(i))."""
        tok, limit = self.entry.tokenizer, self.entry.max_length
        index = {w: i for i, w in enumerate(self.state["vocab"])}
        out = np.zeros((len(texts), limit), dtype=np.int64)
        for i, text in enumerate(texts):
            tokens = tokenize(text or "", tok.lowercase, tok.pattern)[:limit]
            if not tokens:
                raise DataError(f"{name(i)} is empty (no tokens matching {tok.pattern!r})")
            out[i, : len(tokens)] = [index.get(t, 1) for t in tokens]
        return out

    def encode(self, chunk) -> tuple[np.ndarray, np.ndarray]:
        texts = self._texts(chunk)
        x = self.ids(texts, lambda i: f"{chunk.where(i)}, column '{self.entry.text_column}'")
        return x, np.ones(len(texts), dtype=bool)
