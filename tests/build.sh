#!/usr/bin/env bash
# Builds the binaries the local stack and the tests run: the functions, the
# agent and the admin CLI, each the way `sam build` builds a function
# (one package per command). The workspace-hack crate makes every package
# resolve the same dependency features, so these builds share one set of
# compiled dependencies with `cargo test --workspace` (checked in tests/run.sh).
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
for package in config-api config-refresh rollout-driver config-agent tenant-config-admin tenant-config-local-stack "$@"; do
  cargo build --locked -p "$package"
done
