"""In CI (DLCLI_CI=1, set by .ci/run) a test marked must_run_in_ci may not skip, and the test command counts skips."""
import os
import shutil
import subprocess
import sys
import textwrap
from pathlib import Path

TESTS = Path(__file__).parent

SAMPLE = textwrap.dedent("""
    import pytest

    @pytest.mark.must_run_in_ci
    def test_required_skips_inside():
        pytest.skip("no widget here")

    @pytest.mark.must_run_in_ci
    @pytest.mark.skipif(True, reason="no gadget here")
    def test_required_skipif():
        pass

    def test_optional_skips():
        pytest.skip("optional thing missing")

    @pytest.mark.must_run_in_ci
    def test_required_runs():
        pass

    @pytest.mark.must_run_in_ci
    @pytest.mark.xfail(reason="known")
    def test_required_xfails():
        assert False
""")


def run_sample(tmp_path, ci: str | None) -> subprocess.CompletedProcess:
    shutil.copy(TESTS / "conftest.py", tmp_path / "conftest.py")
    (tmp_path / "test_sample.py").write_text(SAMPLE)
    env = {k: v for k, v in os.environ.items() if k != "DLCLI_CI" and not k.startswith("PYTEST_")}
    if ci is not None:
        env["DLCLI_CI"] = ci
    return subprocess.run([sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", "-rA", str(tmp_path)],
                          cwd=tmp_path, env=env, capture_output=True, text=True, timeout=300)


def test_outside_ci_skips_pass_and_are_counted(tmp_path):
    done = run_sample(tmp_path, None)
    assert done.returncode == 0, done.stdout + done.stderr
    assert "skipped: 3 (2 of them must run in CI: DLCLI_CI=1 fails them)" in done.stdout
    assert "1 passed, 3 skipped, 1 xfailed" in done.stdout.splitlines()[-1]


def test_in_ci_a_required_skip_fails_and_others_stay_skips(tmp_path):
    done = run_sample(tmp_path, "1")
    assert done.returncode == 1, done.stdout + done.stderr
    out = done.stdout
    assert "skipped in CI (DLCLI_CI is set), where this test must run: Skipped: no widget here" in out
    assert "skipped in CI (DLCLI_CI is set), where this test must run: Skipped: no gadget here" in out
    assert "FAILED test_sample.py::test_required_skips_inside" in out
    assert "ERROR test_sample.py::test_required_skipif" in out  # a skipif skips in setup: a failed setup is an error
    assert "skipped: 1\n" in out
    assert "1 failed, 1 passed, 1 skipped, 1 xfailed, 1 error" in out.splitlines()[-1]


def test_dlcli_ci_0_is_not_ci(tmp_path):
    assert run_sample(tmp_path, "0").returncode == 0


def test_the_chromium_and_mount_tests_are_marked(tmp_path):
    """The five Chromium tests and the two that mount a tmpfs: the skips the issue names, each one marked."""
    files = [TESTS / name for name in ("test_serve.py", "test_serve_hardening.py", "test_series_export.py",
                                       "test_faults.py")]
    done = subprocess.run([sys.executable, "-m", "pytest", "--collect-only", "-q", "-p", "no:cacheprovider",
                           "-m", "must_run_in_ci", *map(str, files)], cwd=TESTS.parent, capture_output=True,
                          text=True, timeout=300)
    ids = [line for line in done.stdout.splitlines() if "::" in line]
    assert len(ids) == 7, done.stdout + done.stderr
    assert sum("test_faults.py" in i for i in ids) == 2 and sum("page" in i for i in ids) == 5, ids
