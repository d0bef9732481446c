#!/usr/bin/env bash
# The test command: installs the tools (tests/setup.sh), builds, then runs every
# test: unit and in-process tests, adapter tests against moto server, end-to-end
# tests (functions under cargo lambda watch, config-agent processes, the admin
# CLI, the template), a smoke run of the benchmark, and the walk-through.
set -euo pipefail
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$root"
bash tests/setup.sh
export PATH="$root/.venv/bin:$PATH"
bash tests/build.sh
cargo test --locked --workspace --no-fail-fast "$@"
# A smoke run of the benchmark (tiny sizes): every measurement and baseline runs.
cargo build --locked -p tenant-config-bench
"$root/target/debug/tenant-config-bench" --smoke
# The local stack's walk-through: the demo's story, checked step by step.
cargo build --locked -p tenant-config-e2e --bin local-stack
"$root/target/debug/local-stack" --walkthrough
