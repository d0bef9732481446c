#!/usr/bin/env bash
# The test command: installs the tools (tests/setup.sh), builds once, then runs
# every test: unit tests, adapter tests against moto server, and end-to-end
# tests that run config-api under cargo lambda watch.
set -euo pipefail
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$root"
bash tests/setup.sh
export PATH="$root/.venv/bin:$PATH"
# cargo lambda watch runs `cargo run --bin config-api`; building that exact
# unit first keeps the end-to-end tests from compiling while they wait.
cargo build --locked -p config-api
cargo test --locked --workspace --no-fail-fast "$@"
