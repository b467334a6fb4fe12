"""The documentation site: the config reference is generated from the schema and committed current, and the site
builds with `mkdocs build --strict` (no broken links, no missing pages or API references)."""

import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


def test_committed_config_reference_is_current():
    from dlcli.reference import config_reference

    committed = (ROOT / "docs" / "reference" / "config.md").read_text(encoding="utf-8")
    assert committed == config_reference(), \
        "docs/reference/config.md is stale: run `python -m dlcli.reference > docs/reference/config.md`"


def test_reference_lists_every_registered_name_and_key():
    from dlcli.augment import AUGMENTS
    from dlcli.data.catalog import DATASETS
    from dlcli.models.layers import LAYERS
    from dlcli.optim import OPTIMIZERS, SCHEDULERS
    from dlcli.reference import config_reference
    from dlcli.tasks import TASKS

    page = config_reference()
    for name in DATASETS.names():
        assert f"### data: {name} " in page
    for name in OPTIMIZERS.names():
        assert f"### optimizer: {name} " in page
    for name in SCHEDULERS.names():
        assert f"### scheduler: {name} " in page
    for name in [*LAYERS.names(), *AUGMENTS.names()]:
        assert f"### {name} " in page
    for name in TASKS.names():
        assert f"### task: {name}\n" in page
    # a key with its type, default and description, as the schema has them
    assert "| `patience` | integer > 0 | `3` | epochs without an improvement before training stops |" in page
    assert "| `label_smoothing` | number >= 0.0, < 1.0 | `0.0` |" in page


@pytest.mark.must_run_in_ci
@pytest.mark.skipif(shutil.which("mkdocs") is None and not (Path(sys.executable).parent / "mkdocs").exists(),
                    reason="mkdocs is not installed (pip install -e '.[docs]')")
def test_site_builds_strict(tmp_path):
    mkdocs = shutil.which("mkdocs") or str(Path(sys.executable).parent / "mkdocs")
    done = subprocess.run([mkdocs, "build", "--strict", "--site-dir", str(tmp_path / "site")], cwd=ROOT,
                          capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-3000:]
    assert (tmp_path / "site" / "reference" / "config" / "index.html").exists()
    api = (tmp_path / "site" / "api" / "index.html").read_text(encoding="utf-8")
    assert "Run.predict" in api or "predict" in api


def test_the_site_home_is_the_readme():
    """docs/index.md is README.md with its links made relative to the site (tools/docs_index.py writes it)."""
    sys.path.insert(0, str(ROOT / "tools"))
    from docs_index import site_index

    committed = (ROOT / "docs" / "index.md").read_text(encoding="utf-8")
    assert committed == site_index((ROOT / "README.md").read_text(encoding="utf-8")), \
        "docs/index.md differs from README.md: run `python tools/docs_index.py`"
    assert "](docs/" not in committed and "](getting-started.md)" in committed
