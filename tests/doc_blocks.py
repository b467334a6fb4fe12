"""The fenced blocks of the documentation pages and the test markers written above them.

A marker is an HTML comment on the line (or the blank line) before a block's opening fence; the site and GitHub do
not show it. One directive on one line, or several, one a line:

    <!-- test: skip: a server that runs until stopped (tests/test_serve.py starts it) -->

    <!-- test:
    add dlcli train: --set train.epochs=1 --set data.max_train_samples=64
    skip pip install: installs packages from the network
    -->

Directives (WORDS are the first words of a command, as typed on the page):
- `skip: REASON`                the block is not run;
- `skip WORDS: REASON`          a bash block's commands that start with WORDS are not run;
- `add WORDS: ARGS`             ARGS are appended to the commands that start with WORDS (what shrinks them);
- `files: PATH ...`             small inputs the block reads are written first: pictures (`x.png`, `x.jpg`, or a
                                folder `dir/` of ten), a table (`x.csv`) or series (`x.npz`);
- `write PATH: TEXT`            a one-line file the block reads (a config with a mistake in it);
- `first: COMMAND`              a command run before the block (a run the block works on);
- `python: CODE`                Python run before a python block, in its namespace (what the block takes as given);
- `argv: ARGS`                  sys.argv[1:] of a python block;
- `replace OLD: NEW`            OLD in the block becomes NEW: `{latest}` and `{previous}` are the last two runs made,
                                `{cwd}` the folder the page runs in;
- `expect WORDS: TEXT`          what the commands that start with WORDS print holds TEXT (as the page says);
- `exists: PATH ...`            files the block writes (`--save DIR`, `-o FILE`) exist after it;
- `fragment of PATH [at KEY]`   a yaml block is part of the config file PATH (under KEY): each of its alternatives (a
                                top-level key written again starts one) is merged into it and validated;
- `excerpt of PATH`             a yaml block quotes PATH: every value it shows is the file's, and it validates;
- `train: ARGS`                 a yaml block (each alternative) is also trained: `dlcli train` with ARGS.
A line starting with `#` is a note. A yaml block without a marker is a whole config and validates; a text block
whose lines start with `$ ` is a transcript: each command is run and every line shown under it must be in its output
(`...` stands for lines left out).
Whatever the markers say, a `dlcli train` prints the new run's id as its last line (`--cv K`: the folds' ids, then
the refit's), and the output of a dlcli command given --json is JSON. An `add`, `skip WORDS` or `expect` that
matches no command of its block fails, as a stale marker would otherwise go unnoticed.
"""

from __future__ import annotations

import re
import textwrap
from dataclasses import dataclass, field
from pathlib import Path

FENCE = re.compile(r"^(?P<indent>[ \t]*)(?P<ticks>```+)(?P<lang>[\w-]*)\s*$")
MARKER = re.compile(r"<!--\s*test:(?P<body>.*?)-->", re.DOTALL)
WORDS = "skip|add|files|write|first|python|argv|replace|expect|exists|train|fragment|excerpt"
DIRECTIVE = re.compile(rf"^(?P<word>{WORDS})\b(?P<rest>.*)$", re.DOTALL)


@dataclass
class Marker:
    skip: str | None = None
    skip_commands: list[tuple[list[str], str]] = field(default_factory=list)
    add: list[tuple[list[str], list[str]]] = field(default_factory=list)
    files: list[str] = field(default_factory=list)
    first: list[str] = field(default_factory=list)
    python: list[str] = field(default_factory=list)
    argv: list[str] = field(default_factory=list)
    replace: list[tuple[str, str]] = field(default_factory=list)
    write: list[tuple[str, str]] = field(default_factory=list)
    expect: list[tuple[list[str], str]] = field(default_factory=list)
    exists: list[str] = field(default_factory=list)
    train: list[str] | None = None
    fragment: tuple[str, str | None] | None = None
    excerpt: str | None = None


@dataclass
class Block:
    page: str
    line: int  # the opening fence's line, 1-based
    lang: str
    code: str  # dedented to the fence's indentation
    marker: Marker

    @property
    def where(self) -> str:
        return f"{self.page}:{self.line}"


def parse_marker(body: str, where: str) -> Marker:
    import shlex

    marker = Marker()
    for raw in filter(None, (line.strip() for line in body.strip().splitlines())):
        if raw.startswith("#"):
            continue  # a note for the reader of the marker
        match = DIRECTIVE.match(raw)
        if not match:
            raise ValueError(f"{where}: unknown test directive {raw!r} (see tests/doc_blocks.py)")
        word, rest = match["word"], match["rest"]
        head, sep, value = rest.partition(": ")
        if not sep and rest.endswith(":"):
            head, sep, value = rest[:-1], ":", ""
        head, value = head.strip(), value.strip()
        if word in ("fragment", "excerpt"):
            parts = rest.split()
            if len(parts) not in (2, 4) or parts[0] != "of" or (len(parts) == 4 and parts[2] != "at"):
                raise ValueError(f"{where}: expected `{word} of PATH` (fragment: `at KEY` may follow), got {raw!r}")
            if word == "fragment":
                marker.fragment = (parts[1], parts[3] if len(parts) == 4 else None)
            else:
                marker.excerpt = parts[1]
            continue
        if not sep:
            raise ValueError(f"{where}: {raw!r} needs a ': ' after `{word}{rest}`")
        if word == "skip":
            if not value:
                raise ValueError(f"{where}: a skip needs its reason: {raw!r}")
            if head:
                marker.skip_commands.append((head.split(), value))
            else:
                marker.skip = value
        elif word == "add":
            marker.add.append((head.split(), shlex.split(value)))
        elif word == "files":
            marker.files += value.split()
        elif word == "first":
            marker.first.append(value)
        elif word == "python":
            marker.python.append(value)
        elif word == "argv":
            marker.argv = shlex.split(value)
        elif word == "replace":
            marker.replace.append((head, value))
        elif word == "write":
            marker.write.append((head, value))
        elif word == "expect":
            marker.expect.append((head.split(), value))
        elif word == "exists":
            marker.exists += value.split()
        elif word == "train":
            marker.train = shlex.split(value)
        if head and word not in ("skip", "add", "replace", "write", "expect"):
            raise ValueError(f"{where}: `{word}` takes no words before its ':': {raw!r}")
    return marker


def page_blocks(path: Path, root: Path) -> list[Block]:
    """Every fenced block of a page, in order, each with the marker written above it (an empty one if none)."""
    lines = path.read_text(encoding="utf-8").splitlines()
    name = str(path.relative_to(root))
    blocks, i = [], 0
    while i < len(lines):
        opening = FENCE.match(lines[i])
        if not opening:
            i += 1
            continue
        start = i
        i += 1
        while i < len(lines) and lines[i].strip() != opening["ticks"]:  # ```` holds ``` blocks as text
            i += 1
        code = textwrap.dedent("\n".join(lines[start + 1:i])) + "\n"
        i += 1
        # the marker: a comment ending on the line above the fence, or above one blank line
        above = start - 1
        if above >= 0 and not lines[above].strip():
            above -= 1
        marker = Marker()
        if above >= 0 and lines[above].strip().endswith("-->"):
            top = above
            while top > 0 and "<!--" not in lines[top]:
                top -= 1
            comment = MARKER.search("\n".join(lines[top:above + 1]))
            if comment:
                marker = parse_marker(comment["body"], f"{name}:{top + 1}")
        blocks.append(Block(name, start + 1, opening["lang"], code, marker))
    return blocks


def commands(code: str) -> list[tuple[int, list[str]]]:
    """A bash block as (line in the block, words) per command: `\\` joins lines, `#` starts a comment, `&&` and `;`
    separate commands."""
    import shlex

    out, pending, first = [], "", 0
    for number, line in enumerate(code.splitlines()):
        if not pending:
            first = number
        if line.rstrip().endswith("\\"):
            pending += line.rstrip()[:-1] + " "
            continue
        words, pending = shlex.split(pending + line, comments=True), ""
        command: list[str] = []
        for word in [*words, "&&"]:
            if word in ("&&", ";"):
                if command:
                    out.append((first, command))
                command = []
            else:
                command.append(word)
    return out


def starts_with(words: list[str], prefix: list[str]) -> bool:
    return words[:len(prefix)] == prefix


def yaml_alternatives(code: str) -> list[str]:
    """A yaml block cut where a top-level key is written again: each piece is one alternative the page shows."""
    pieces: list[list[str]] = [[]]
    keys: set[str] = set()
    for line in code.splitlines():
        top = re.match(r"^([A-Za-z_][\w]*):", line)
        if top and top[1] in keys:
            pieces.append([])
            keys = set()
        if top:
            keys.add(top[1])
        pieces[-1].append(line)
    return ["\n".join(piece) + "\n" for piece in pieces if any(p.strip() and not p.lstrip().startswith("#")
                                                                for p in piece)]
