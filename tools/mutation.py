"""Mutation testing of the modules where a silent bug costs most: plant one small bug at a time (an operator flipped,
a comparison moved by one, a constant changed, a condition negated) in a copy of the project, run the tests written
for that module, and count the bugs they catch.

    python tools/mutation.py                      # every module below, with its tests
    python tools/mutation.py dlcli/serve/guard.py # one module
    python tools/mutation.py --list               # the mutants, without running them
    python tools/mutation.py dlcli/tasks/metrics.py --lines 50,51   # only the mutants on these lines

The working tree is never touched: its files (tracked, and untracked ones git does not ignore) are copied to a
temporary directory, each mutant is written there and the tests run there, in a child forked from a process that
has already imported torch, scikit-learn and uvicorn (but no dlcli), so a mutant costs its tests' time alone. A
mutant is killed when its tests fail, error or run past their time (three times the clean run, plus 30 s); one that
passes survives and is printed with its line, to be killed by a new test or judged equivalent in the README's
Development section. Our own runner rather than mutmut: mutmut 3 runs every test against a trampolined copy
of the whole package and wants its settings in pyproject.toml; this is one file that runs each module's own tests.
"""

from __future__ import annotations

import argparse
import ast
import os
import shutil
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent

# module -> the tests that cover it and run in seconds (a mutant runs them all, stopping at the first failure)
MODULES = {
    # neither file needs the conftest (which imports the whole CLI)
    "dlcli/serve/guard.py": ["--noconftest", "tests/test_guard.py"],
    "dlcli/tasks/metrics.py": ["--noconftest", "tests/test_metrics.py"],
}

BINOPS = {ast.Add: ast.Sub, ast.Sub: ast.Add, ast.Mult: ast.Div, ast.Div: ast.Mult, ast.FloorDiv: ast.Div,
          ast.Mod: ast.Mult, ast.Pow: ast.Mult, ast.BitAnd: ast.BitOr, ast.BitOr: ast.BitAnd}
COMPARES = {ast.Lt: ast.LtE, ast.LtE: ast.Lt, ast.Gt: ast.GtE, ast.GtE: ast.Gt, ast.Eq: ast.NotEq,
            ast.NotEq: ast.Eq, ast.In: ast.NotIn, ast.NotIn: ast.In, ast.Is: ast.IsNot, ast.IsNot: ast.Is}
SYMBOLS = {ast.Add: "+", ast.Sub: "-", ast.Mult: "*", ast.Div: "/", ast.FloorDiv: "//", ast.Mod: "%", ast.Pow: "**",
           ast.BitAnd: "&", ast.BitOr: "|", ast.Lt: "<", ast.LtE: "<=", ast.Gt: ">", ast.GtE: ">=", ast.Eq: "==",
           ast.NotEq: "!=", ast.In: "in", ast.NotIn: "not in", ast.Is: "is", ast.IsNot: "is not",
           ast.And: "and", ast.Or: "or"}


@dataclass
class Mutant:
    index: int  # the n-th mutation site the walk meets, so a mutant can be rebuilt from the source alone
    line: int
    what: str


class Mutator(ast.NodeTransformer):
    """Walks a module; mutates the site numbered `target` (None: only lists the sites). Docstrings, annotations,
    imports, f-strings' text and strings with a space in them (prose: the words of a message, whose wording the tests
    match where it matters) are left alone: a planted bug there changes no behaviour, or only a message's words."""

    def __init__(self, target: int | None = None):
        self.target, self.sites = target, []

    def _site(self, node, what: str) -> bool:
        self.sites.append(Mutant(len(self.sites), node.lineno, what))
        return self.target == len(self.sites) - 1

    # never mutated: annotations, docstrings, f-strings, imports
    def visit_AnnAssign(self, node):
        if node.value is not None:
            node.value = self.visit(node.value)
        return node

    def visit_arg(self, node):
        return node

    def visit_FunctionDef(self, node):
        node.args = self.visit(node.args)
        node.decorator_list = [self.visit(d) for d in node.decorator_list]
        node.body = self._body(node.body)
        return node

    visit_AsyncFunctionDef = visit_FunctionDef

    def visit_ClassDef(self, node):
        node.decorator_list = [self.visit(d) for d in node.decorator_list]
        node.bases = [self.visit(b) for b in node.bases]
        node.body = self._body(node.body)
        return node

    def visit_Module(self, node):
        node.body = self._body(node.body)
        return node

    def _body(self, body):
        start = 1 if body and isinstance(body[0], ast.Expr) and isinstance(body[0].value, ast.Constant) \
            and isinstance(body[0].value.value, str) else 0
        return body[:start] + [self.visit(stmt) for stmt in body[start:]]

    def visit_ImportFrom(self, node):
        return node

    def visit_Import(self, node):
        return node

    def visit_JoinedStr(self, node):
        node.values = [self.visit(v) if isinstance(v, ast.FormattedValue) else v for v in node.values]
        return node

    def visit_FormattedValue(self, node):
        node.value = self.visit(node.value)
        return node

    # the mutations
    def visit_BinOp(self, node):
        self.generic_visit(node)
        if type(node.op) in BINOPS:
            new = BINOPS[type(node.op)]
            if self._site(node, f"`{SYMBOLS[type(node.op)]}` -> `{SYMBOLS[new]}`"):
                node.op = new()
        return node

    def visit_AugAssign(self, node):
        self.generic_visit(node)
        if type(node.op) in BINOPS:
            new = BINOPS[type(node.op)]
            if self._site(node, f"`{SYMBOLS[type(node.op)]}=` -> `{SYMBOLS[new]}=`"):
                node.op = new()
        return node

    def visit_Compare(self, node):
        self.generic_visit(node)
        for i, op in enumerate(node.ops):
            if type(op) in COMPARES:
                new = COMPARES[type(op)]
                if self._site(node, f"`{SYMBOLS[type(op)]}` -> `{SYMBOLS[new]}`"):
                    node.ops[i] = new()
        return node

    def visit_BoolOp(self, node):
        self.generic_visit(node)
        new = ast.Or if isinstance(node.op, ast.And) else ast.And
        if self._site(node, f"`{SYMBOLS[type(node.op)]}` -> `{SYMBOLS[new]}`"):
            node.op = new()
        return node

    def visit_UnaryOp(self, node):
        self.generic_visit(node)
        if isinstance(node.op, (ast.Not, ast.USub)):
            if self._site(node, f"`{'not ' if isinstance(node.op, ast.Not) else '-'}x` -> `x`"):
                return node.operand
        return node

    def visit_If(self, node):
        self.generic_visit(node)
        if self._site(node, "`if c` -> `if not c`"):
            node.test = ast.UnaryOp(ast.Not(), node.test)
        return node

    def visit_Constant(self, node):
        value = node.value
        if isinstance(value, bool):
            if self._site(node, f"`{value}` -> `{not value}`"):
                return ast.Constant(not value)
        elif isinstance(value, (int, float)):
            new = value + 1
            if self._site(node, f"`{value!r}` -> `{new!r}`"):
                return ast.Constant(new)
        elif isinstance(value, (str, bytes)) and not (isinstance(value, str) and " " in value):
            new = value + (b"X" if isinstance(value, bytes) else "X") if value else (b"X" if isinstance(value, bytes)
                                                                                     else "X")
            if self._site(node, f"`{value!r}` -> `{new!r}`"):
                return ast.Constant(new)
        return node


def sites(source: str) -> list[Mutant]:
    walker = Mutator()
    walker.visit(ast.parse(source))
    return walker.sites


def mutated(source: str, index: int) -> str:
    tree = ast.parse(source)
    Mutator(index).visit(tree)
    return ast.unparse(ast.fix_missing_locations(tree))


def copy_project(to: Path) -> None:
    files = subprocess.run(["git", "ls-files", "-z", "--cached", "--others", "--exclude-standard"], cwd=ROOT,
                           capture_output=True, check=True).stdout.split(b"\0")
    for name in filter(None, files):
        src = ROOT / name.decode()
        if src.is_file():
            dst = to / name.decode()
            dst.parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(src, dst)


PRELOADED = ("torch", "numpy", "sklearn.metrics", "uvicorn", "h11", "pytest")


def preload() -> None:
    """Import the heavy libraries once, before the first fork: each mutant's test run then starts in a moment. dlcli
    itself is never imported here, so every child imports the module as it is on disk, mutated."""
    import importlib

    sys.dont_write_bytecode = True  # a mutant may have the size and mtime second of the clean file: no stale .pyc
    for name in PRELOADED:
        try:
            importlib.import_module(name)
        except ImportError:
            pass


def run_tests(where: Path, tests: list[str], timeout: float) -> tuple[str, float]:
    """Run pytest on `tests` in a forked child, in `where`; its outcome and seconds."""
    start = time.monotonic()
    pid = os.fork()
    if pid == 0:  # the child: pytest in the copy, its output discarded
        code = 3
        try:
            os.chdir(where)
            sys.path.insert(0, str(where))
            os.environ.pop("DLCLI_CI", None)
            null = os.open(os.devnull, os.O_WRONLY)
            os.dup2(null, 1)
            os.dup2(null, 2)
            import pytest

            code = int(pytest.main(["-x", "-q", "-p", "no:cacheprovider", *tests]))
        finally:
            os._exit(code)
    while True:
        done, status = os.waitpid(pid, os.WNOHANG)
        if done:
            break
        if time.monotonic() - start > timeout:
            os.kill(pid, 9)
            os.waitpid(pid, 0)
            return "timeout", time.monotonic() - start
        time.sleep(0.02)
    code = os.waitstatus_to_exitcode(status)
    # 1: a test failed; 2: collection failed (a mutant that breaks the import); 3: pytest's internal error
    outcome = {0: "survived", 1: "killed", 2: "killed", 3: "killed"}.get(code, f"error {code}")
    return outcome, time.monotonic() - start


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("modules", nargs="*", help=f"paths of modules (default: {', '.join(MODULES)})")
    parser.add_argument("--list", action="store_true", help="print the mutants and stop")
    parser.add_argument("--lines", type=lambda v: {int(n) for n in v.split(",")},
                        help="only the mutants on these lines (comma-separated): to check a new test on survivors")
    args = parser.parse_args()
    modules = args.modules or list(MODULES)
    for module in modules:
        if module not in MODULES:
            parser.error(f"no tests are set for {module} (MODULES in {Path(__file__).name}: {', '.join(MODULES)})")
    scores = {}
    if not args.list:
        preload()
    with tempfile.TemporaryDirectory(prefix="dlcli-mutation-") as tmp:
        work = Path(tmp)
        copy_project(work)
        for module in modules:
            source = (work / module).read_text()
            lines = source.splitlines()
            found = [m for m in sites(source) if args.lines is None or m.line in args.lines]
            print(f"{module}: {len(found)} mutants, tests {' '.join(MODULES[module])}", flush=True)
            if args.list:
                for m in found:
                    print(f"  line {m.line}: {m.what}    {lines[m.line - 1].strip()}")
                continue
            outcome, clean = run_tests(work, MODULES[module], timeout=1800)
            if outcome != "survived":
                print(f"  the tests fail on the unmutated module ({outcome}): fix that first", flush=True)
                return 1
            print(f"  clean run {clean:.1f} s", flush=True)
            killed, survivors = 0, []
            try:
                for done, m in enumerate(found):
                    if done and done % 25 == 0:
                        print(f"  {done}/{len(found)} run, {killed} killed", flush=True)
                    (work / module).write_text(mutated(source, m.index))
                    outcome, took = run_tests(work, MODULES[module], timeout=3 * clean + 30)
                    if outcome in ("killed", "timeout"):
                        killed += 1
                        if outcome == "timeout":  # a hang (a timer that never fires) or a machine far too busy
                            print(f"  timed out line {m.line}: {m.what}    {lines[m.line - 1].strip()}", flush=True)
                    else:
                        survivors.append(m)
                        print(f"  SURVIVED line {m.line}: {m.what}    {lines[m.line - 1].strip()}  ({outcome})",
                              flush=True)
            finally:
                (work / module).write_text(source)
            scores[module] = (killed, len(found))
            print(f"  {module}: {killed}/{len(found)} killed ({100 * killed / max(len(found), 1):.0f}%), "
                  f"{len(survivors)} survived", flush=True)
    for module, (killed, total) in scores.items():
        print(f"{module}: {killed}/{total} killed ({100 * killed / max(total, 1):.0f}%)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
