#!/usr/bin/env bash
# Builds each function and the agent the way `cargo lambda watch` builds them
# (`cargo run --bin <function>`: one package per command, so each gets its own
# feature set). Building them alike first keeps the local stack from compiling
# while it starts. Extra package names are built after them.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
for package in config-api config-refresh config-agent "$@"; do
  cargo build --locked -p "$package"
done
