#!/usr/bin/env bash
# The test command: installs the tools (tests/setup.sh), builds once, then runs
# every test: unit tests, adapter tests against moto server, and end-to-end
# tests that run config-api under cargo lambda watch.
set -euo pipefail
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$root"
bash tests/setup.sh
export PATH="$root/.venv/bin:$PATH"
# cargo lambda watch runs `cargo run --bin <function>`, which builds each
# package with its own feature set; building them the same way (one package
# per command) first keeps the end-to-end tests from compiling while they wait.
for package in config-api config-refresh config-agent; do
  cargo build --locked -p "$package"
done
cargo test --locked --workspace --no-fail-fast "$@"
# A smoke run of the benchmark (tiny sizes): every measurement and baseline runs.
cargo build --locked -p tenant-config-bench
"$root/target/debug/tenant-config-bench" --smoke
# The local stack's walk-through: the demo's story, checked step by step.
cargo build --locked -p tenant-config-e2e --bin local-stack
"$root/target/debug/local-stack" --walkthrough
