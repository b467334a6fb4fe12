"""Write docs/index.md, the site's home page, from README.md: the same page with its links into docs/ made relative
to the site and the paragraph that points at the site saying where its pages are. tests/test_docs.py fails when the
committed docs/index.md is not what this writes, so the two never drift apart.

    python tools/docs_index.py          # rewrites docs/index.md
"""

from __future__ import annotations

import re
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
SITE_POINTER = re.compile(r"^The documentation lives in .*?\n\n", re.M | re.S)
SITE_HOME = ("The pages on the left go from [getting started](getting-started.md) through each kind of data and task "
             "to using a trained model; the [config reference](reference/config.md) lists every key, generated from "
             "the schema.\n\n")


def site_index(readme: str) -> str:
    """docs/index.md's text for this README."""
    page, found = SITE_POINTER.subn(SITE_HOME, readme, count=1)
    if not found:
        raise SystemExit("README.md has no paragraph starting 'The documentation lives in': update tools/docs_index.py")
    return page.replace("](docs/", "](")


def main() -> None:
    (ROOT / "docs" / "index.md").write_text(site_index((ROOT / "README.md").read_text(encoding="utf-8")),
                                            encoding="utf-8")


if __name__ == "__main__":
    main()
