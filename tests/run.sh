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

# Every package and test, built once.
cargo test --locked --workspace --no-run

# The binaries the stack runs, one package per command as cargo lambda watch
# builds them. Thanks to workspace-hack/ they reuse every dependency built
# above; a third-party crate compiled here means two packages resolve its
# features differently, which doubles every cold build.
mkdir -p target
bash tests/build.sh tenant-config-bench 2>&1 | tee target/build-per-package.log
if grep -E '^ +Compiling [^ ]+ v[^ ]+$' target/build-per-package.log; then
  echo "error: the crates above were compiled again for a single package:" >&2
  echo "       run 'cargo hakari generate && cargo hakari manage-deps' (see README, Build)" >&2
  exit 1
fi

cargo test --locked --workspace --no-fail-fast "$@"
# A smoke run of the benchmark (tiny sizes): every measurement and baseline runs.
"$root/target/debug/tenant-config-bench" --smoke
# The local stack's walk-through: the demo's story, checked step by step.
"$root/target/debug/local-stack" --walkthrough
