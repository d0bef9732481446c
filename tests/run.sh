#!/usr/bin/env bash
# The test command: installs the tools (tests/setup.sh), builds, then runs every
# test: unit and in-process tests, adapter tests against moto server, end-to-end
# tests (functions under cargo lambda watch, config-agent processes, the admin
# CLI, the template), a smoke run of the benchmark, and the walk-through.
#
# The suites run side by side (TEST_JOBS at a time, default 4): each
# end-to-end suite starts its own stack on free loopback ports and spends much
# of its time waiting on moto and the processes it started, so several at once
# keep both cores busy where one after another left them idle.
# Arguments are passed to every test binary (a test name filter, --nocapture).
set -euo pipefail
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$root"
export PATH="$root/.venv/bin:$PATH"
# A fresh CI clone builds everything once: incremental compilation only
# writes caches no later build there will read (and slows the cold build).
if [[ "${CI:-}" == true ]]; then
  export CARGO_INCREMENTAL=0
fi
logs="$root/target/test-logs"
rm -rf "$logs"
mkdir -p "$logs"

# The Python tools first: uv installs them in seconds, and beside the build
# its parallel bytecode compilation slowed the build by more than that.
bash tests/setup.sh

# Every package and test, built once; the test binaries it wrote are listed
# (package, target, the directory cargo test runs it from, executable).
cargo test --locked --workspace --no-run --message-format=json-render-diagnostics \
  >"$logs/build.json"
python3 - "$logs/build.json" >"$logs/binaries.tsv" <<'EOF'
import json, os, sys
for line in open(sys.argv[1]):
    message = json.loads(line)
    if message.get("reason") != "compiler-artifact" or not message.get("executable"):
        continue
    if not message["profile"]["test"]:
        continue
    url, _, fragment = message["package_id"].partition("#")
    package = fragment.split("@")[0] if "@" in fragment else url.rstrip("/").rsplit("/", 1)[-1]
    target = message["target"]["name"]
    directory = os.path.dirname(message["manifest_path"])
    print(f"{package}:{target}\t{directory}\t{message['executable']}")
EOF

# The binaries the stack runs, one package per command as cargo lambda watch
# builds them. Thanks to workspace-hack/ they reuse every dependency built
# above; a third-party crate compiled here means two packages resolve its
# features differently, which doubles every cold build.
bash tests/build.sh tenant-config-bench 2>&1 | tee "$logs/build-per-package.log"
if grep -E '^ +Compiling [^ ]+ v[^ ]+$' "$logs/build-per-package.log"; then
  echo "error: the crates above were compiled again for a single package:" >&2
  echo "       run 'cargo hakari generate && cargo hakari manage-deps' (see docs/development.md#build)" >&2
  exit 1
fi

jobs_at_once="${TEST_JOBS:-4}"
if ! [[ "$jobs_at_once" =~ ^[1-9][0-9]*$ ]]; then
  echo "error: TEST_JOBS must be a whole number of at least 1, not '$jobs_at_once'" >&2
  exit 2
fi
# No suite should come near this; one that hangs fails instead of holding
# the command (and CI) forever.
suite_limit_secs="${TEST_SUITE_LIMIT_SECS:-900}"
# One moto imported once, from which every stack's moto server is forked
# (local-stack/moto_fork_server.py): a fresh moto_server spends ~5 s of CPU
# importing its backends, and the suites start about forty.
moto_socket="${TMPDIR:-/tmp}/tenant-config-moto-$$.sock"
python local-stack/moto_fork_server.py serve "$moto_socket" >"$logs/moto-fork-server.log" 2>&1 &
moto_fork_server=$!
disown "$moto_fork_server"  # not a suite: neither waited for nor counted
waited=0
until grep -q "listening" "$logs/moto-fork-server.log"; do
  waited=$((waited + 1))
  if ! kill -0 "$moto_fork_server" 2>/dev/null || ((waited > 600)); then
    echo "error: the moto fork server did not start within 60 s:" >&2
    cat "$logs/moto-fork-server.log" >&2
    exit 1
  fi
  sleep 0.1
done
export MOTO_FORK_SERVER_SOCKET="$moto_socket"
stop_moto_fork_server() { kill "$moto_fork_server" 2>/dev/null || true; rm -f "$moto_socket"; }
trap stop_moto_fork_server EXIT
# Ctrl-C or a stop ends the suites still running, with what they started
# (each stack stops with its test process).
trap 'kill $(jobs -p) 2>/dev/null; wait; stop_moto_fork_server' INT TERM
started_all=$SECONDS

# The suites: every test binary, except that the end-to-end binary (one
# module per suite, built as one binary to compile and link once) gives one
# suite per module, run with its tests' exact names. With a name filter among
# the arguments, each binary runs whole with it (splitting would run the
# filter's matches once per module).
split_by_module=(tenant-config-e2e:e2e)
has_filter=false
for argument in "$@"; do [[ "$argument" == -* ]] || has_filter=true; done
mkdir -p "$logs/suites"
: >"$logs/suites.tsv"
while IFS=$'\t' read -r name directory executable; do
  if [[ "$has_filter" == true || ! " ${split_by_module[*]} " =~ " $name " ]]; then
    printf '%s\t%s\t%s\t\n' "$name" "$directory" "$executable" >>"$logs/suites.tsv"
    continue
  fi
  "$executable" --list --format terse | sed -n 's/: test$//p' >"$logs/suites/$name.all"
  if grep -qv '::' "$logs/suites/$name.all"; then
    echo "error: $name has tests outside a module, which no suite would run:" >&2
    grep -v '::' "$logs/suites/$name.all" >&2
    exit 1
  fi
  for module in $(cut -d: -f1 "$logs/suites/$name.all" | sort -u); do
    suite="${name%%:*}:$module"
    grep "^$module::" "$logs/suites/$name.all" >"$logs/suites/${suite//[:\/]/-}.tests"
    printf '%s\t%s\t%s\t%s\n' "$suite" "$directory" "$executable" \
      "$logs/suites/${suite//[:\/]/-}.tests" >>"$logs/suites.tsv"
  done
done <"$logs/binaries.tsv"

# Runs one suite into its log and records "status seconds name".
run_suite() {
  local name="$1" directory="$2"
  shift 2
  local started=$SECONDS status=0
  (cd "$directory" && timeout --kill-after=30 "$suite_limit_secs" "$@") \
    >"$logs/${name//[:\/]/-}.log" 2>&1 || status=$?
  echo "$status $((SECONDS - started)) $name" >>"$logs/summary"
}

# The longest suites first, so that none starts last and runs alone.
longest_first=(
  tenant-config-e2e:refresh_path tenant-config-e2e:faults tenant-config-e2e:soak
  tenant-config-e2e:convergence tenant-config-e2e:verify tenant-config-e2e:read_path
  tenant-config-e2e:agent_service tenant-config-e2e:admin_cli tenant-config-e2e:write_api
  tenant-config-e2e:secrets_in_logs tenant-config-e2e:adapters
)
order() {
  local name
  for name in "${longest_first[@]}"; do grep -P "^\Q$name\E\t" "$logs/suites.tsv" || true; done
  grep -v -P "^($(IFS='|'; echo "${longest_first[*]}"))\t" "$logs/suites.tsv"
}

# Waits until fewer than TEST_JOBS suites run.
wait_for_a_slot() {
  while (($(jobs -rp | wc -l) >= jobs_at_once)); do wait -n || true; done
}

# A smoke run of the benchmark (tiny sizes): every measurement and baseline
# runs. The longest of all, so it starts first.
wait_for_a_slot
run_suite bench-smoke "$root" "$root/target/debug/tenant-config-bench" --smoke &
while IFS=$'\t' read -r name directory executable tests; do
  wait_for_a_slot
  if [[ -n "$tests" ]]; then
    mapfile -t names <"$tests"
    run_suite "$name" "$directory" "$executable" --exact "${names[@]}" "$@" &
  else
    run_suite "$name" "$directory" "$executable" "$@" &
  fi
done < <(order)
# The local stack's walk-through: the demo's story, checked step by step.
wait_for_a_slot
run_suite walkthrough "$root" "$root/target/debug/local-stack" --walkthrough &
wait

expected=$(($(wc -l <"$logs/suites.tsv") + 2))
failed=0
while read -r status seconds name; do
  if [[ "$status" != 0 ]]; then
    failed=$((failed + 1))
    echo "==== FAILED: $name (exit $status, ${seconds} s); its log:" >&2
    tail -n 80 "$logs/${name//[:\/]/-}.log" >&2
  fi
done <"$logs/summary"
echo "suites (seconds, slowest first):"
sort -k2 -n -r "$logs/summary" | awk '{printf "  %4d s  %s%s\n", $2, $3, ($1 == 0 ? "" : "  FAILED")}'
ran=$(wc -l <"$logs/summary")
echo "$ran suites in $((SECONDS - started_all)) s, $failed failed; logs in target/test-logs/"
if ((ran != expected)); then
  echo "error: $expected suites should have run, $ran did" >&2
  exit 1
fi
((failed == 0))
