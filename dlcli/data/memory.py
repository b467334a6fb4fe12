"""Tables that live in memory: a pandas DataFrame or a pyarrow Table given to `dlcli.train(config, data=df)`.

The frame is never written anywhere. While the API call runs, it is registered under `memory:<fingerprint>`, which
becomes the config's train_file (or test_file), and dlcli.data.tables reads it like a one-part file. The run's
data.json records each frame's rows, columns and SHA-256 fingerprint; a command that needs the data later (evaluate,
resume) without the frame says in one line that the data lived in memory and how to pass it again.
"""

from __future__ import annotations

import contextlib
import hashlib

from dlcli.errors import DataError

PREFIX = "memory:"
_FRAMES: dict[str, object] = {}  # fingerprint -> pyarrow.Table, while an API call runs


def as_arrow(frame, role: str):
    """A pandas DataFrame or a pyarrow Table as a pyarrow Table."""
    import pyarrow as pa

    if isinstance(frame, pa.Table):
        return frame
    if type(frame).__name__ == "DataFrame" and hasattr(frame, "to_dict"):
        try:
            return pa.Table.from_pandas(frame, preserve_index=False)
        except (pa.ArrowException, TypeError, ValueError) as err:
            raise DataError(f"{role}: the DataFrame cannot become an Arrow table ({str(err)[:160]})") from None
    raise DataError(f"{role}: a pandas DataFrame or a pyarrow Table, not {type(frame).__name__}")


def fingerprint(table) -> str:
    """SHA-256 of the table's schema and values (Arrow's IPC stream of it)."""
    import pyarrow as pa

    digest = hashlib.sha256()

    class Sink:  # hash the stream as it is written, without holding a second copy of the table
        closed = False

        def write(self, data):
            digest.update(data)
            return len(data)

        def flush(self):
            pass

    with pa.ipc.new_stream(pa.PythonFile(Sink(), mode="w"), table.schema) as writer:
        writer.write_table(table.combine_chunks() if table.num_rows else table)
    return digest.hexdigest()


def is_memory(path) -> bool:
    return isinstance(path, str) and path.startswith(PREFIX)


def table_for(path: str, role: str):
    """The registered table behind `memory:<fingerprint>`, or a one-line error saying the data lived in memory."""
    found = _FRAMES.get(path[len(PREFIX):])
    if found is None:
        raise DataError(f"{role}: this run's table lived in memory (a DataFrame given to dlcli.train, {path}); "
                         f"pass the same frame again from Python: dlcli.load(RUN).evaluate(data=df) or "
                         f".resume(data=df)")
    return found


def describe(path: str) -> dict:
    table = _FRAMES[path[len(PREFIX):]]
    return {"rows": table.num_rows, "columns": table.column_names, "sha256": path[len(PREFIX):]}


@contextlib.contextmanager
def frames(cfg, data=None, test_data=None):
    """Register `data` / `test_data` as the config's train_file / test_file for the duration of a call. A config
    that already names `memory:` files (a run trained on frames) must be given the same frames."""
    if data is None and test_data is None:
        yield
        return
    if not hasattr(cfg.data, "train_file"):
        raise DataError(f"data=: only table datasets (csv, parquet, text_csv) take a DataFrame; this config's is "
                         f"{cfg.data.dataset}")
    added = []
    try:
        for frame, key in ((data, "train_file"), (test_data, "test_file")):
            if frame is None:
                continue
            table = as_arrow(frame, "test_data" if key == "test_file" else "data")
            print_ = fingerprint(table)
            recorded = getattr(cfg.data, key)
            if is_memory(recorded) and recorded not in (PREFIX, PREFIX + print_):  # PREFIX: a new run
                raise DataError(f"{'test_data' if key == 'test_file' else 'data'}: not the frame this run was "
                                 f"trained with (its fingerprint is {recorded[len(PREFIX):][:12]}..., this one's "
                                 f"{print_[:12]}...)")
            _FRAMES[print_] = table
            added.append(print_)
            setattr(cfg.data, key, PREFIX + print_)
        yield
    finally:
        for key in added:
            _FRAMES.pop(key, None)
