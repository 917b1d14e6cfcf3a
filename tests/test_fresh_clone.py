"""The repository carries what its tests read: a copy of its tracked files with nothing beside it passes a test that
validates server frames against the AsyncAPI document (docs/spec/README.md)."""
import os
import shutil
import subprocess
import sys
from pathlib import Path

from tests.spec import SPEC_PATH

ROOT = Path(__file__).resolve().parents[1]


def test_the_spec_the_tests_read_is_inside_the_repository():
    assert SPEC_PATH.resolve().is_relative_to(ROOT) and SPEC_PATH.exists()
    tracked = subprocess.run(["git", "ls-files", "docs/spec"], cwd=ROOT, capture_output=True, text=True).stdout
    assert "docs/spec/asyncapi.yaml" in tracked.split()


def test_a_copy_of_the_tracked_files_alone_passes_a_protocol_test(tmp_path):
    clone = tmp_path / "alone" / "repo"  # nothing beside it: no ../shared
    files = subprocess.run(["git", "ls-files", "-z"], cwd=ROOT, capture_output=True, check=True).stdout
    for name in filter(None, files.decode().split("\0")):
        source = ROOT / name
        if source.is_file():
            (clone / name).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(source, clone / name)
    env = {**os.environ, "VAR_DIR": str(tmp_path / "var"), "TEST_DATABASE_NAME": "test_fresh_clone"}
    result = subprocess.run(
        [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", "tests/test_channels.py", "-k",
         "nitro_channel_id or yourself"],
        cwd=clone, env=env, capture_output=True, text=True, timeout=300,
    )
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    assert " passed" in result.stdout and "error" not in result.stdout.splitlines()[-1]
