#!/usr/bin/env bash
# Installs what the local stack and the tests need into ./.venv (git-ignored):
# moto server (local AWS) and cargo-lambda. Needs only Python 3 and Rust.
# Re-running is cheap: it reinstalls only when tests/requirements.txt changed.
set -euo pipefail
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
venv="$root/.venv"
requirements="$root/tests/requirements.txt"
stamp="$venv/.requirements.sha256"
want="$(sha256sum "$requirements" | cut -d' ' -f1)"
if [[ -x "$venv/bin/moto_server" && -x "$venv/bin/cargo-lambda" && "$(cat "$stamp" 2>/dev/null)" == "$want" ]]; then
  exit 0
fi
echo "setup: installing moto server and cargo-lambda into .venv" >&2
python3 -m venv "$venv"
"$venv/bin/python" -m pip install --quiet --no-cache-dir --disable-pip-version-check --upgrade pip
"$venv/bin/python" -m pip install --quiet --no-cache-dir --disable-pip-version-check -r "$requirements"
echo "$want" > "$stamp"
