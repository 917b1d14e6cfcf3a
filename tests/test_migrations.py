"""The migrations match the models, whatever the interpreter's hash seed (a model option built from a set once
came out in a different order per process, so each ``makemigrations`` wrote a spurious migration)."""
import os
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]


@pytest.mark.parametrize("seed", ["0", "1", "2", "3"])
def test_the_migrations_are_complete_and_stable(seed, tmp_path):
    env = {k: v for k, v in os.environ.items() if k not in ("DATABASE_URL", "REDIS_URL")}
    env.update(PYTHONHASHSEED=seed, VAR_DIR=str(tmp_path), DJANGO_SETTINGS_MODULE="operatorapi.settings")
    result = subprocess.run([sys.executable, "manage.py", "makemigrations", "--check", "--dry-run"], cwd=REPO,
                            env=env, capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stdout + result.stderr
