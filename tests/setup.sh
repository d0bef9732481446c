#!/usr/bin/env bash
# Installs tools into ./.venv (git-ignored), and the IAM policy simulator into
# tests/iam/node_modules (git-ignored). Needs only Python 3, Rust and Node.js
# with npm (on the machine).
#   bash tests/setup.sh          what the local stack and the tests run: moto
#                                server, cargo-lambda, the benchmark's baselines
#   bash tests/setup.sh deploy   also the SAM CLI and cfn-lint (deploying, and
#                                CI's template checks)
# Re-running is cheap: nothing is installed again unless what is asked for, or
# a requirements file of it, changed.
set -euo pipefail
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
venv="$root/.venv"
UV_VERSION=0.13.9
sets=(requirements)
case "${1:-}" in
  "") ;;
  deploy) sets+=(requirements-deploy) ;;
  *) echo "usage: tests/setup.sh [deploy]" >&2; exit 2 ;;
esac
[[ -x "$venv/bin/python" ]] || python3 -m venv "$venv"
# One pip resolution for every set asked for, so that one set's pins cannot
# move another's dependencies after it was installed. The stamp holds a line
# per set installed, with its file's hash.
stamp="$venv/.installed.sha256"
wanted=()
args=()
for set in "${sets[@]}"; do
  wanted+=("$set $(sha256sum "$root/tests/$set.txt" | cut -d' ' -f1)")
  args+=(-r "$root/tests/$set.txt")
done
satisfied=true
for line in "${wanted[@]}"; do
  grep -qxF "$line" "$stamp" 2>/dev/null || satisfied=false
done
# The IAM policy simulator the template's IAM matrix runs
# (tests/tests/iam_matrix.rs): npm packages of tests/iam/, pinned by its
# package-lock.json, installed with the machine's Node.js into
# tests/iam/node_modules (git-ignored), again only when the lock changes.
# The same for the official OpenFeature web SDK and its OFREP provider, which
# tests/tests/ofrep.rs runs under Node to poll a bulk evaluation (tests/ofrep-web/).
install_npm_packages() {
  local dir="$1" what="$2"
  local lock="$root/tests/$dir/package-lock.json"
  local stamp="$root/tests/$dir/node_modules/.installed.sha256"
  local wanted
  wanted="$(sha256sum "$lock" | cut -d' ' -f1)"
  if [[ "$(cat "$stamp" 2>/dev/null)" != "$wanted" ]]; then
    echo "setup: installing $what into tests/$dir/node_modules" >&2
    (cd "$root/tests/$dir" && npm ci --no-audit --no-fund --loglevel=error >/dev/null)
    echo "$wanted" >"$stamp"
  fi
}
install_npm_packages iam "the IAM policy simulator"
install_npm_packages ofrep-web "the OpenFeature web SDK and its OFREP provider"

if [[ "$satisfied" == true && -x "$venv/bin/moto_server" && -x "$venv/bin/cargo-lambda" ]]; then
  exit 0
fi
echo "setup: installing ${sets[*]/%/.txt} from tests/ into .venv" >&2
# uv (from PyPI, pinned) resolves and installs in a few seconds what pip takes
# a minute for, bytecode included (compiled once here, not at every import:
# each test stack starts a moto server).
if [[ "$("$venv/bin/uv" --version 2>/dev/null)" != "uv $UV_VERSION" ]]; then
  "$venv/bin/python" -m pip install --quiet --no-cache-dir --disable-pip-version-check "uv==$UV_VERSION"
fi
"$venv/bin/uv" pip install --quiet --no-cache --compile-bytecode --python "$venv/bin/python" "${args[@]}"
printf '%s\n' "${wanted[@]}" >"$stamp"
