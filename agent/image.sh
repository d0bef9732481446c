#!/usr/bin/env bash
# Builds the config-agent container image (agent/Dockerfile):
#
#   1. the release binary for the target architecture, cross-compiled by
#      cargo lambda (zig) against an old glibc, so it runs on the image's
#      glibc 2.36 whatever glibc this machine has;
#   2. checks on that binary: its CPU architecture, and that no symbol needs a
#      glibc newer than the image's;
#   3. `docker build` with a context holding only that binary.
#
# Usage: agent/image.sh [--arch arm64|x86_64] [--tag NAME:TAG] [--binary-only]
#   --arch         arm64 (default, Graviton Fargate: agent-service.yaml
#                  Architecture ARM64) or x86_64 (Architecture X86_64)
#   --tag          image name (default config-agent:{version}-{commit}-{arch})
#   --binary-only  stop after step 2; print the binary's path
#
# Needs Rust, Python 3 (tests/setup.sh installs cargo lambda into .venv),
# readelf (binutils) and, for step 3, Docker with access to gcr.io to pull
# the base image. Push the result to a registry your tasks pull from (ECR):
# docs/deploy.md. The machines this project is developed on reach no
# container registry, so step 3 has only been run where one is reachable.
set -euo pipefail
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$root"

usage() { sed -n '11,15p' "${BASH_SOURCE[0]}" | sed 's/^# \{0,1\}//'; }
die() { echo "image.sh: $*" >&2; exit 1; }

arch=arm64
tag=""
binary_only=false
while (($#)); do
  case "$1" in
    --arch) arch="${2:-}"; shift 2 || die "--arch needs a value" ;;
    --tag) tag="${2:-}"; shift 2 || die "--tag needs a value" ;;
    --binary-only) binary_only=true; shift ;;
    -h | --help) usage; exit 0 ;;
    *) usage >&2; exit 2 ;;
  esac
done

# The image's glibc: gcr.io/distroless/cc-debian12 is Debian 12 (glibc 2.36).
image_glibc=2.36
case "$arch" in
  arm64) cargo_arch=--arm64; platform=linux/arm64; elf_machine=AArch64 ;;
  x86_64) cargo_arch=--x86-64; platform=linux/amd64; elf_machine=X86-64 ;;
  *) die "--arch must be arm64 or x86_64, not '$arch'" ;;
esac

bash tests/setup.sh
export PATH="$root/.venv/bin:$PATH"

# One directory per architecture, so an x86_64 build never leaves a binary
# where an arm64 image is built from. cargo lambda names it bootstrap.
out="$root/target/agent-image/$arch"
cargo lambda build --release --locked "$cargo_arch" --bin config-agent --lambda-dir "$out"
binary="$out/config-agent/bootstrap"
[[ -x "$binary" ]] || die "cargo lambda wrote no $binary"

command -v readelf >/dev/null || die "readelf (binutils) is needed to check the binary"
readelf --file-header "$binary" | grep -Eq "Machine:.*${elf_machine}" \
  || die "$binary is not a ${elf_machine} binary: $(readelf --file-header "$binary" | grep Machine:)"
newest_glibc="$(readelf --version-info --wide "$binary" | grep -Eo 'GLIBC_[0-9]+(\.[0-9]+)+' \
  | sed 's/^GLIBC_//' | sort -V | tail -n 1)"
[[ -n "$newest_glibc" ]] || die "$binary names no glibc version: not the dynamically linked binary expected"
if [[ "$(printf '%s\n' "$newest_glibc" "$image_glibc" | sort -V | tail -n 1)" != "$image_glibc" ]]; then
  die "$binary needs glibc $newest_glibc; the image has $image_glibc"
fi
echo "image.sh: $binary ($arch, needs glibc $newest_glibc, image has $image_glibc)" >&2

if $binary_only; then
  echo "$binary"
  exit 0
fi

command -v docker >/dev/null || die "docker is needed for the image (or use --binary-only)"
if [[ -z "$tag" ]]; then
  version="$(sed -n 's/^version = "\(.*\)"$/\1/p' agent/Cargo.toml | head -n 1)"
  commit="$(git rev-parse --short=12 HEAD 2>/dev/null)" \
    || die "not a git checkout: name the image with --tag"
  tag="config-agent:${version}-${commit}-${arch}"
fi

# The build context is the binary alone: nothing else of the checkout
# (sources, target/, .venv/) is sent to the daemon or can end up in a layer.
context="$(mktemp -d)"
trap 'rm -rf "$context"' EXIT
cp "$binary" "$context/config-agent"
# The warm-start snapshot's directory, empty: the image gives it to the
# nonroot user (see the Dockerfile).
mkdir "$context/state"
docker build --platform "$platform" --file "$root/agent/Dockerfile" --tag "$tag" "$context"
echo "$tag"
