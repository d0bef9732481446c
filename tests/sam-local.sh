#!/usr/bin/env bash
# `sam local` on this machine, against the local stack.
#   bash tests/sam-local.sh         set up, `sam build`, then run the sam local
#                                   checks (tests/tests/sam_local.rs); CI runs this
#                                   after the test command
#   bash tests/sam-local.sh setup   set up and `sam build` only: then the demo
#                                   (bash tests/demo.sh) prints the sam local commands
#
# What it sets up, each step skipped when already done (needs root, as CI and
# these machines run):
# - Debian's docker.io, debootstrap and, when the functions' architecture is
#   not the machine's, qemu-user-static (registered with binfmt_misc, so that
#   arm64 binaries run in containers here);
# - dockerd, when none answers;
# - a stand-in for the Lambda base image (public.ecr.aws/lambda/provided:al2023):
#   no container registry is reachable from these machines, so SAM cannot pull
#   it. The stand-in is a minimal Debian of the functions' architecture with CA
#   certificates, built once by debootstrap and tagged by the hash of its
#   recipe; SAM adds its runtime interface emulator on top, as it does to the
#   real image. Elsewhere, drop --invoke-image and SAM pulls the real one;
# - `sam build` (cargo lambda, release, the template's architecture) into .aws-sam/build.
set -euo pipefail
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$root"
export SAM_CLI_TELEMETRY=0
state="$root/target/sam-local"
mkdir -p "$state"
mode="${1:-check}"
case "$mode" in
  check | setup) ;;
  *) echo "usage: tests/sam-local.sh [setup]" >&2; exit 2 ;;
esac
if [[ "$(id -u)" != 0 ]]; then
  echo "error: tests/sam-local.sh installs packages and starts dockerd: run it as root" >&2
  exit 1
fi
bash tests/setup.sh deploy
export PATH="$root/.venv/bin:$PATH"
# As tests/run.sh builds under CI: the same setting, so nothing it built is
# built again here.
if [[ "${CI:-}" == true ]]; then
  export CARGO_INCREMENTAL=0
fi

# The functions' architecture, as the template declares it (Globals).
arch="$(sed -n '/^Globals:/,/^Resources:/s/^ *Architectures: *\[ *\([a-z0-9_]*\) *\]/\1/p' template.yaml)"
case "$arch" in
  arm64) qemu_arch=aarch64 ;;
  x86_64) arch=amd64; qemu_arch=x86_64 ;;
  *) echo "error: no Architectures in template.yaml's Globals ('$arch')" >&2; exit 1 ;;
esac
foreign=false
[[ "$(dpkg --print-architecture)" == "$arch" ]] || foreign=true

step() { echo "== sam-local: $*"; }

# sam build cross-compiles with cargo lambda: the Rust target of the
# functions' architecture, from the toolchain's own rustup.
rust_target="$qemu_arch-unknown-linux-gnu"
if ! rustup target list --installed | grep -qx "$rust_target"; then
  step "adding the Rust target $rust_target (rustup)"
  rustup target add "$rust_target" || { echo "error: rustup could not add $rust_target, which sam build needs" >&2; exit 1; }
fi

missing=()
command -v dockerd >/dev/null || missing+=(docker.io)
command -v debootstrap >/dev/null || missing+=(debootstrap)
if [[ "$foreign" == true ]] && ! command -v "qemu-$qemu_arch-static" >/dev/null; then
  missing+=(qemu-user-static)
fi
if ((${#missing[@]})); then
  step "installing ${missing[*]} (Debian packages)"
  install() { DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends "${missing[@]}"; }
  install >"$state/apt.log" 2>&1 || { apt-get update -q >>"$state/apt.log" 2>&1 && install >>"$state/apt.log" 2>&1; } || {
    tail -n 30 "$state/apt.log" >&2
    exit 1
  }
fi

if [[ "$foreign" == true ]]; then
  binfmt=/proc/sys/fs/binfmt_misc
  [[ -e "$binfmt/register" ]] || mount -t binfmt_misc binfmt_misc "$binfmt"
  if [[ ! -e "$binfmt/qemu-$qemu_arch" ]]; then
    step "registering qemu-$qemu_arch-static with binfmt_misc"
    # The F flag opens the interpreter now, so it runs in containers too.
    grep -v '^#' "/usr/lib/binfmt.d/qemu-$qemu_arch.conf" >"$binfmt/register"
  fi
fi

if ! docker info >/dev/null 2>&1; then
  step "starting dockerd (log: target/sam-local/dockerd.log)"
  # Without docker's userland proxy, a published port refuses connections
  # until the container listens on it. With it, the proxy accepts at once, and
  # SAM's first request can reach the emulator before it listens (seconds, under
  # emulation): "No response from invoke container", about one invoke in ten.
  setsid dockerd --userland-proxy=false >"$state/dockerd.log" 2>&1 </dev/null &
  for _ in $(seq 1 120); do
    docker info >/dev/null 2>&1 && break
    sleep 0.5
  done
  docker info >/dev/null 2>&1 || { tail -n 30 "$state/dockerd.log" >&2; exit 1; }
elif ! (for pid in $(pgrep -x dockerd); do tr '\0' ' ' <"/proc/$pid/cmdline"; done 2>/dev/null) |
  grep -q -- '--userland-proxy=false' &&
  ! grep -qE '"userland-proxy": *false' /etc/docker/daemon.json 2>/dev/null; then
  echo "warning: the running dockerd uses its userland proxy: about one sam local invoke in ten may" >&2
  echo "         get 'No response from invoke container' (set \"userland-proxy\": false in daemon.json)" >&2
fi

# Without the userland proxy, docker lets the bridge route to 127.0.0.0/8
# (route_localnet): a container could then reach the host's loopback
# services, moto and the agents' read ports among them. New connections from
# outside loopback to it are dropped, as kube-proxy does (CVE-2020-8558);
# the published ports' own traffic is NATed and passes.
localnet_rule=(INPUT -d 127.0.0.0/8 ! -s 127.0.0.0/8 -m conntrack ! --ctstate RELATED,ESTABLISHED,DNAT -j DROP)
iptables -C "${localnet_rule[@]}" 2>/dev/null || iptables -I "${localnet_rule[@]}"

# The stand-in image, tagged by its recipe: a change of suite, architecture or
# packages builds a new one.
suite=bookworm
packages=ca-certificates
recipe="debootstrap --variant=minbase --arch=$arch --include=$packages $suite"
image="tenant-config/lambda-stand-in:$arch-$(printf '%s' "$recipe" | sha256sum | cut -c1-12)"
if ! docker image inspect "$image" >/dev/null 2>&1; then
  step "building the stand-in base image $image (debootstrap, once)"
  started=$SECONDS
  rootfs="$state/rootfs-$arch"
  # --one-file-system: a debootstrap cut short leaves /proc and /sys mounted
  # in the root it was building.
  rm -rf --one-file-system "$rootfs"
  # shellcheck disable=SC2086 # the recipe is words
  $recipe "$rootfs" >"$state/debootstrap.log" 2>&1 || { tail -n 30 "$state/debootstrap.log" >&2; exit 1; }
  tar -C "$rootfs" -c . | docker import - "$image" >/dev/null
  rm -rf --one-file-system "$rootfs"
  size_mb=$(($(docker image inspect -f '{{.Size}}' "$image") / 1000000))
  echo "built $image in $((SECONDS - started)) s, $size_mb MB" | tee "$state/stand-in-built.txt"
fi
echo "$image" >"$state/image"

step "sam build (release, $arch; the first build compiles every dependency)"
started=$SECONDS
sam build --template-file template.yaml >"$state/sam-build.log" 2>&1 || { tail -n 40 "$state/sam-build.log" >&2; exit 1; }
echo "sam build took $((SECONDS - started)) s"

if [[ "$mode" == setup ]]; then
  echo "sam local is ready: start the demo (bash tests/demo.sh), which prints the commands"
  exit 0
fi
step "the sam local checks (tests/tests/sam_local.rs)"
# A container left by an invocation cut short (its sam killed) goes with us.
remove_containers() {
  docker ps -aq --filter "ancestor=${image%%:*}:rapid-$arch" | xargs -r docker rm -f >/dev/null 2>&1 || true
}
trap remove_containers EXIT
bash tests/build.sh
cargo test --locked -p tenant-config-e2e --test e2e -- --include-ignored --test-threads 1 sam_local:: \
  2>&1 | tee "$state/checks.log"
# Every check ran: a renamed module or test would otherwise pass as none.
grep -qE "^test result: ok\. 3 passed" "$state/checks.log" || {
  echo "error: the sam local checks did not all run and pass (target/sam-local/checks.log)" >&2
  exit 1
}
