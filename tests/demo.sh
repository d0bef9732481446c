#!/usr/bin/env bash
# Runs the local stack: moto server seeded with two tenants and config-api
# under cargo lambda watch, then prints ready-to-paste curl commands.
set -euo pipefail
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$root"
bash tests/setup.sh
export PATH="$root/.venv/bin:$PATH"
for package in config-api config-refresh config-agent; do
  cargo build --locked -p "$package"
done
cargo build --locked -p tenant-config-e2e --bin local-stack
exec "$root/target/debug/local-stack"
