#!/usr/bin/env bash
# Runs the local stack: moto server seeded with two tenants, two config agents,
# config-api and config-refresh under cargo lambda watch; prints what runs where
# and ready-to-paste commands. Ctrl-C stops everything.
set -euo pipefail
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$root"
bash tests/setup.sh
export PATH="$root/.venv/bin:$PATH"
bash tests/build.sh
exec "$root/target/debug/local-stack"
