#!/usr/bin/env bash
# The benchmark command: builds the release binaries (host, for the measurements)
# and the arm64 Lambda bootstraps (for their sizes), then writes bench/RESULTS.md.
# Takes several minutes; `bash bench/run.sh --smoke` runs every measurement with
# tiny sizes instead (the test command does that, in debug).
set -euo pipefail
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$root"
bash tests/setup.sh
export PATH="$root/.venv/bin:$PATH"
profile=release
if [[ " $* " == *" --smoke "* ]]; then profile=dev; fi
# One package per command: cargo lambda watch builds each function that way.
for package in config-api config-refresh rollout-driver config-agent tenant-config-local-stack tenant-config-bench; do
  cargo build --locked --profile "$profile" -p "$package"
done
if [[ "$profile" == release ]]; then
  for function in config-api config-refresh; do
    cargo lambda build --release --arm64 --bin "$function"
  done
  exec "$root/target/release/tenant-config-bench" "$@"
fi
exec "$root/target/debug/tenant-config-bench" "$@"
