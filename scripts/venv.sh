# Sourced with the lock file to install: make .venv (Python 3.11) and install that lock into it with
# pip --require-hashes, again only when that lock file changed since it was last installed (one sha256 stamp per
# lock in .venv). The locks are generated from requirements/*.in by scripts/lock.
#   source scripts/venv.sh requirements.txt        runtime only (scripts/run)
#   source scripts/venv.sh requirements-test.txt   runtime + test (scripts/test; also the default with no argument)
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
lock=${1:-requirements-test.txt}
if [ ! -x .venv/bin/python ]; then
  echo "creating .venv" >&2
  "$(command -v python3.11 || command -v python3)" -m venv .venv
fi
stamp=.venv/.$lock.sha256
wanted=$(sha256sum "$lock" | cut -d' ' -f1)
if [ "$(cat "$stamp" 2>/dev/null)" != "$wanted" ]; then
  echo "installing $lock into .venv (first run takes about a minute)..." >&2
  .venv/bin/python -m pip install --disable-pip-version-check --require-hashes -r "$lock" >&2
  echo "$wanted" > "$stamp"
  echo "installed $lock into .venv" >&2
fi
