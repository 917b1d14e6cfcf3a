# Sourced by scripts/run and scripts/test: make .venv (Python 3.11) and install requirements.txt into it,
# again only when requirements.txt changed since the last install.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
if [ ! -x .venv/bin/python ]; then
  echo "creating .venv" >&2
  "$(command -v python3.11 || command -v python3)" -m venv .venv
fi
stamp=.venv/.requirements.sha256
wanted=$(sha256sum requirements.txt | cut -d' ' -f1)
if [ "$(cat "$stamp" 2>/dev/null)" != "$wanted" ]; then
  echo "installing requirements.txt into .venv" >&2
  .venv/bin/python -m pip install -q --disable-pip-version-check -r requirements.txt
  echo "$wanted" > "$stamp"
fi
