#!/usr/bin/env bash
# Installs tools into ./.venv (git-ignored). Needs only Python 3 and Rust.
#   bash tests/setup.sh          what the local stack and the tests run: moto
#                                server, cargo-lambda, the benchmark's baselines
#   bash tests/setup.sh deploy   also the SAM CLI and cfn-lint (deploying, and
#                                CI's template checks)
# Re-running is cheap: each set is installed again only when its requirements
# file changed.
set -euo pipefail
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
venv="$root/.venv"
sets=(requirements)
case "${1:-}" in
  "") ;;
  deploy) sets+=(requirements-deploy) ;;
  *) echo "usage: tests/setup.sh [deploy]" >&2; exit 2 ;;
esac
[[ -x "$venv/bin/python" ]] || python3 -m venv "$venv"
for set in "${sets[@]}"; do
  requirements="$root/tests/$set.txt"
  stamp="$venv/.$set.sha256"
  want="$(sha256sum "$requirements" | cut -d' ' -f1)"
  if [[ "$(cat "$stamp" 2>/dev/null)" == "$want" ]]; then
    continue
  fi
  echo "setup: installing tests/$set.txt into .venv" >&2
  "$venv/bin/python" -m pip install --quiet --no-cache-dir --disable-pip-version-check -r "$requirements"
  echo "$want" > "$stamp"
done
