"""Every page's commands and code run as written (#34 item 4): the bash blocks of README.md and docs/*.md are typed
in a fresh folder beside the repository's configs/, examples/, benchmarks/ and tools/, the python blocks executed,
the yaml blocks validated, and the transcripts (`$ command` then its output) compared with what the command prints.
The markers above the blocks (tests/doc_blocks.py; docs/development.md) shrink the runs to tiny data and name
what is skipped and why; a block this test cannot run and no marker skips fails it, so no block goes unrun
unnoticed. Fashion-MNIST is a slice (600 training, 200 test images) of Debian's files; the other data is what the
pages' own scripts write (example tables, series, scenes) or the small pictures and tables the markers ask for."""

import contextlib
import copy
import io
import json
import runpy
import sys
import warnings
import zlib
from pathlib import Path

import numpy as np
import pytest
import yaml
from typer.testing import CliRunner

from dlcli.cli import app
from tests.conftest import FASHION, needs_fashion
from tests.doc_blocks import (
    Marker,
    commands,
    page_blocks,
    parse_marker,
    starts_with,
    yaml_alternatives,
)
from tests.test_sweep import fashion_slice

ROOT = Path(__file__).resolve().parents[1]
PAGES = [page for page in ["README.md", *sorted(str(p.relative_to(ROOT)) for p in (ROOT / "docs").glob("*.md")
                                                if p.name != "index.md")] if "```" in (ROOT / page).read_text()]
COPIED = ("examples", "benchmarks", "tools")


class Page:
    """A page's blocks run in order in one folder, as a reader following it would type them."""

    def __init__(self, name: str, folder: Path):
        self.name, self.folder = name, folder
        self.runner = CliRunner()
        self.ran: list[str] = []
        self.expect: list = []
        self.expected: set[int] = set()
        self.added: set[int] = set()
        self.made: list[str] = []  # the run ids the page's commands made, in order

    # -- files the markers ask for ---------------------------------------------------------------------------
    def write_file(self, name: str) -> None:
        from PIL import Image

        path = self.folder / name
        rng = np.random.default_rng(zlib.crc32(name.encode()))
        if name.endswith("/"):
            path.mkdir(parents=True, exist_ok=True)
            for i in range(10):
                self.picture(path / f"{i:02d}.png", rng, Image)
            return
        path.parent.mkdir(parents=True, exist_ok=True)
        if path.suffix in (".png", ".jpg"):
            self.picture(path, rng, Image)
        elif path.suffix == ".csv":
            self.table(path, rng)
        elif path.suffix == ".npz":
            n, steps = 40, 24
            y = np.arange(n) % 2
            t = np.linspace(0, 6.28, steps)
            x = np.sin(t[None] * (1 + y[:, None])) + 0.1 * rng.standard_normal((n, steps))
            np.savez(path, x=x.astype(np.float32), y=y)
        else:
            raise AssertionError(f"{self.name}: no small file of the kind {name!r} to write (files: .png .jpg .csv "
                                 ".npz or dir/)")

    @staticmethod
    def picture(path: Path, rng, Image) -> None:
        pixels = rng.integers(0, 256, (40, 48, 3), dtype=np.uint8)
        Image.fromarray(pixels).save(path)

    @staticmethod
    def table(path: Path, rng) -> None:
        """80 rows that suit each table a page names: a `label` (yes/no), a `species`, a `rownames` count, numbers,
        a category and a text of several words."""
        n = 80
        x1, x2 = rng.standard_normal(n), rng.standard_normal(n)
        label = np.where(x1 + x2 > 0, "yes", "no")
        words = {"yes": "a bright sunny day by the sea", "no": "a cold grey rain in the town"}
        lines = ["rownames,x1,x2,color,species,text,label"]
        for i in range(n):
            species = ("setosa", "virginica", "versicolor")[int(x1[i] > 0.5) + int(x1[i] > -0.5)]
            lines.append(f"{i + 1},{x1[i]:.3f},{x2[i]:.3f},{('red', 'blue')[i % 2]},{species},"
                         f"{words[label[i]]} {i},{label[i]}")
        path.write_text("\n".join(lines) + "\n")

    # -- commands ----------------------------------------------------------------------------------------------
    def run(self, words: list[str], where: str, check: bool = True) -> str:
        """One command as a shell would run it (`> FILE` redirects stdout); dlcli and python in this process."""
        target = None
        if ">" in words:
            at = words.index(">")
            words, target = words[:at], words[at + 1]
        if words[0] == "dlcli":
            before = set(self.runs())
            result = self.runner.invoke(app, words[1:])
            out, err, code = result.stdout, result.stderr, result.exit_code
            if result.exception and not isinstance(result.exception, SystemExit):
                raise AssertionError(f"{where}: {' '.join(words)}: {result.exception!r}\n{result.output}") \
                    from result.exception
        elif words[0] == "python" and len(words) > 1:
            out, err, code = self.python(words[1:])
        else:
            raise AssertionError(f"{where}: `{' '.join(words)}` is not a command this test can run (dlcli or python "
                                 "...): skip it in the block's marker with the reason")
        self.ran.append(" ".join(words))
        if words[0] == "dlcli":
            new = set(self.runs()) - before
            self.made += [w for w in out.split() if w in new] + sorted(new - set(out.split()))
        if check:
            assert code == 0, f"{where}: `{' '.join(words)}` exited {code}\n{out}\n{err}"
            if words[:2] == ["dlcli", "train"] and "--repeat" not in words:  # the id last; --cv K: folds', refit's
                new = set(self.runs()) - before
                ids = out.split()[-len(new):]
                assert len(new) == (int(words[words.index("--cv") + 1]) + 1 if "--cv" in words else 1) \
                    and set(ids) == new, f"{where}: train does not print its new run ids last\n{out}"
                assert "--cv" not in words or (self.folder / "runs" / ids[-1] / "cv.json").is_file(), \
                    f"{where}: the refit's id is not printed last\n{out}"
            if words[0] == "dlcli" and "--json" in words:
                json.loads(out)  # the page's --json answers are JSON
            for i, (prefix, text) in enumerate(self.expect):
                if starts_with(words, prefix):
                    self.expected.add(i)
                    assert text in out + err, f"{where}: `{' '.join(words)}` does not print {text!r}\n{out}\n{err}"
        if target:
            (self.folder / target).parent.mkdir(parents=True, exist_ok=True)  # the repository has the folder
            (self.folder / target).write_text(out)
        return out + err

    def python(self, args: list[str]) -> tuple[str, str, int]:
        out, err, code = io.StringIO(), io.StringIO(), 0
        argv = sys.argv
        try:
            with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
                if args[0] == "-m":
                    sys.argv = [args[1], *args[2:]]
                    with warnings.catch_warnings():  # `python -m dlcli.x` after dlcli.x was imported: runpy's note
                        warnings.filterwarnings("ignore", "'.*' found in sys.modules", RuntimeWarning)
                        runpy.run_module(args[1], run_name="__main__", alter_sys=True)
                else:
                    sys.argv = args
                    runpy.run_path(args[0], run_name="__main__")
        except SystemExit as stop:
            code = stop.code if isinstance(stop.code, int) else (0 if stop.code is None else 1)
        finally:
            sys.argv = argv
        return out.getvalue(), err.getvalue(), code

    def runs(self) -> list[str]:
        """Run ids in ./runs, oldest first, as `latest` orders them (by the start stamp in the id)."""
        from dlcli.rundirs import list_runs

        return [p.name for p in list_runs(self.folder / "runs")] if (self.folder / "runs").is_dir() else []

    def substituted(self, text: str, marker) -> str:
        for old, new in marker.replace:
            runs = self.made
            new = new.replace("{latest}", runs[-1] if runs else "NO-RUN").replace(
                "{previous}", runs[-2] if len(runs) > 1 else "NO-RUN").replace("{cwd}", str(self.folder))
            assert old in text, f"{self.name}: `replace {old}` does not occur in its block"
            text = text.replace(old, new)
        return text

    # -- blocks ------------------------------------------------------------------------------------------------
    def block(self, block) -> None:
        marker = block.marker
        if marker.skip:
            return
        self.expect, self.expected, self.added = marker.expect, set(), set()
        for name in marker.files:
            self.write_file(name)
        for name, text in marker.write:
            (self.folder / name).write_text(text + "\n")
        for command in marker.first:
            for _, words in commands(command):
                self.run(self.shrunk(words, marker), f"{block.where} (first)")
        code = self.substituted(block.code, marker)
        handler = getattr(self, f"lang_{block.lang}", None)
        assert handler, f"{block.where}: a ```{block.lang} block this test cannot run: mark it `skip: REASON`"
        handler(block, code)
        for word, entries, hit in (("expect", marker.expect, self.expected), ("add", marker.add, self.added)):
            missed = [" ".join(p) for i, (p, _) in enumerate(entries) if i not in hit]
            assert not missed, f"{block.where}: `{word} {missed[0]}` matches no command of the block"
        for path in block.marker.exists:
            assert (self.folder / path).exists(), f"{block.where}: {path} was not written"

    def shrunk(self, words: list[str], marker) -> list[str]:
        for i, (prefix, args) in enumerate(marker.add):
            if starts_with(words, prefix):
                self.added.add(i)
                words = [*words, *args] if ">" not in words else \
                    [*words[:words.index(">")], *args, *words[words.index(">"):]]
        return words

    def lang_bash(self, block, code: str) -> None:
        used = set()
        for number, words in commands(code):
            skipped = [i for i, (prefix, _) in enumerate(block.marker.skip_commands) if starts_with(words, prefix)]
            used.update(skipped)
            if not skipped:
                self.run(self.shrunk(words, block.marker), f"{block.page}:{block.line + 1 + number}")
        unused = [" ".join(p) for i, (p, _) in enumerate(block.marker.skip_commands) if i not in used]
        assert not unused, f"{block.where}: `skip {unused[0]}` matches no command of the block"

    def lang_python(self, block, code: str) -> None:
        namespace: dict = {"__name__": "__main__"}
        argv = sys.argv
        sys.argv = [f"{block.where}", *block.marker.argv]
        try:
            for prelude in block.marker.python:
                exec(compile(prelude, f"{block.where} (python:)", "exec"), namespace)  # noqa: S102 (the marker's code)
            with contextlib.redirect_stdout(io.StringIO()):
                exec(compile("\n" * block.line + code, block.page, "exec"), namespace)  # noqa: S102 (the page's code)
        finally:
            sys.argv = argv

    def lang_yaml(self, block, code: str) -> None:
        from dlcli.config import ConfigError, validate_config

        marker = block.marker
        if marker.excerpt:
            whole = yaml.safe_load((ROOT / marker.excerpt).read_text())
            shown = yaml.safe_load(code)
            for key, value in leaves(shown):
                assert get(whole, key) == value, \
                    f"{block.where}: {'.'.join(map(str, key))} is {value!r} here, {get(whole, key)!r} in " \
                    f"{marker.excerpt}"
            pieces = [code]
            base = whole
        else:
            pieces = yaml_alternatives(code)
            base = yaml.safe_load((ROOT / marker.fragment[0]).read_text()) if marker.fragment else {}
        for piece in pieces:
            data, shown = copy.deepcopy(base), yaml.safe_load(piece)
            assert isinstance(shown, dict), f"{block.where}: not a mapping of config keys: {piece!r}"
            if marker.fragment and marker.fragment[1]:
                data.setdefault(marker.fragment[1], {}).update(shown)
            elif not marker.excerpt:
                data.update(shown)
            try:
                validate_config(data, source=block.where)
            except ConfigError as err:
                raise AssertionError(f"{block.where}: {err}\n{piece}") from None
            if marker.train is not None:  # trained as it stands on the page's data, shrunk by the marker's --set
                path = self.folder / f"block-{block.line}.yaml"
                path.write_text(yaml.safe_dump(data))
                self.run(["dlcli", "train", path.name, *marker.train], block.where)

    def lang_text(self, block, code: str) -> None:
        lines = code.splitlines()
        assert lines and lines[0].startswith("$ "), \
            f"{block.where}: a ```text block that is not a transcript ($ command, output): mark it `skip: REASON`"
        shown: list[tuple[list[str], list[str]]] = []
        for line in lines:
            if line.startswith("$ "):
                shown.append((next(words for _, words in commands(line[2:])), []))
            elif line.strip() and line.strip() != "...":
                shown[-1][1].append(line)
        for words, expected in shown:
            printed = " ".join(self.run(self.shrunk(words, block.marker), block.where, check=False).split())
            for line in expected:
                assert " ".join(line.split()) in printed, \
                    f"{block.where}: `{' '.join(words)}` does not print the page's line\n{line}\nit printed:\n{printed}"


def leaves(node, path=()):
    if isinstance(node, dict):
        for key, value in node.items():
            yield from leaves(value, (*path, key))
    else:
        yield path, node


def get(node, path):
    for key in path:
        if not isinstance(node, dict) or key not in node:
            return "<missing>"
        node = node[key]
    return node


@pytest.fixture(scope="module")
def fashion(tmp_path_factory) -> Path | None:
    if not (FASHION / "train-images-idx3-ubyte.gz").is_file():
        return None
    folder = tmp_path_factory.mktemp("fashion") / "fashion_mnist"
    for name, count in (("train", 600), ("t10k", 200)):
        fashion_slice(name, count, folder)
    return folder


@pytest.mark.parametrize("page", [pytest.param(p, marks=[needs_fashion] * ("fashion_mnist" in (ROOT / p).read_text()))
                                  for p in PAGES])
def test_the_page_runs_as_written(page, tmp_path, monkeypatch, fashion):
    import shutil

    blocks = page_blocks(ROOT / page, ROOT)
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("COLUMNS", "200")  # rich tables as wide as the page shows them
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / ".torch"))  # no weights cached: `dlcli backbones` shows none
    (tmp_path / "configs").symlink_to(ROOT / "configs")
    for folder in COPIED:  # copies: a script writes beside its own repository root (data/sales.csv)
        shutil.copytree(ROOT / folder, tmp_path / folder, ignore=shutil.ignore_patterns("__pycache__"))
    if fashion:
        shutil.copytree(fashion, tmp_path / "data" / "fashion_mnist")
    runner = Page(page, tmp_path)
    for block in blocks:
        runner.block(block)
    print("\ncommands run:\n" + "\n".join(runner.ran))  # shown when the page fails


def test_the_home_page_shows_the_readmes_blocks():
    """docs/index.md is the README for the site: its blocks and markers are the README's, so running the README's
    runs both."""
    readme, home = page_blocks(ROOT / "README.md", ROOT), page_blocks(ROOT / "docs" / "index.md", ROOT)
    assert [(b.lang, b.code, b.marker) for b in home] == [(b.lang, b.code, b.marker) for b in readme]


def test_every_block_is_run_or_skipped_with_a_reason():
    """What runs a block is its language; other languages, and markers that do not parse, fail here before any
    page is run."""
    runnable = {"bash", "python", "yaml", "text"}
    for page in [*PAGES, "docs/index.md"]:
        for block in page_blocks(ROOT / page, ROOT):
            assert block.lang in runnable or block.marker.skip, \
                f"{block.where}: a ```{block.lang} block no test runs: mark it `<!-- test: skip: REASON -->`"
            if block.marker.fragment or block.marker.excerpt:
                assert block.lang == "yaml", f"{block.where}: fragment/excerpt are for yaml blocks"


def test_markers_parse_and_refuse_what_they_do_not_know(tmp_path):
    marker = parse_marker("\nadd dlcli train: --set train.epochs=1 --set 'data.augment=[hflip]'\n"
                          "skip pip install: needs the network\nfiles: a.png dir/\nreplace R/: {latest}/\n", "p:1")
    assert marker.add == [(["dlcli", "train"], ["--set", "train.epochs=1", "--set", "data.augment=[hflip]"])]
    assert marker.skip_commands == [(["pip", "install"], "needs the network")] and marker.skip is None
    assert marker.files == ["a.png", "dir/"] and marker.replace == [("R/", "{latest}/")]
    assert parse_marker("fragment of configs/x.yaml at data", "p:1").fragment == ("configs/x.yaml", "data")
    for bad in ("skip:", "run: this", "fragment configs/x.yaml", "files"):
        with pytest.raises(ValueError):
            parse_marker(bad, "p:1")
    assert commands("a b \\\n  c && d # note\ne 'f g'\n") == [(0, ["a", "b", "c"]), (0, ["d"]), (2, ["e", "f g"])]
    assert yaml_alternatives("model: 1   # one\nmodel: 2\n# a comment\n") == ["model: 1   # one\n",
                                                                           "model: 2\n# a comment\n"]
    page = tmp_path / "page.md"
    page.write_text("<!-- test: skip: shown -->\n\n````markdown\n<!-- test: first: x -->\n```bash\nrm -r /\n```\n"
                    "````\n- item\n\n    <!-- test: argv: a.png -->\n\n    ```python\n    print(1)\n    ```\n"
                    "```yaml\na: 1\n```\n")
    blocks = page_blocks(page, tmp_path)
    assert [(b.line, b.lang, b.code) for b in blocks] == [
        (3, "markdown", "<!-- test: first: x -->\n```bash\nrm -r /\n```\n"), (13, "python", "print(1)\n"),
        (16, "yaml", "a: 1\n")]
    assert blocks[0].marker.skip == "shown" and blocks[1].marker.argv == ["a.png"] and blocks[2].marker == Marker()
