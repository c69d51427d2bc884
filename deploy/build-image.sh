#!/usr/bin/env bash
# Builds the `tenure` image FROM scratch around the release binary:
#   deploy/build-image.sh [TAG]      (default tag: tenure:latest)
set -euo pipefail
cd "$(dirname "$0")/.."
tag="${1:-tenure:latest}"
cargo build --release -p tenure-server --bin tenure
ctx=$(mktemp -d)
trap 'rm -rf "$ctx"' EXIT
mkdir -p "$ctx/rootfs/usr/local/bin" "$ctx/rootfs/tmp" "$ctx/rootfs/var/lib/tenure"
cp target/release/tenure "$ctx/rootfs/usr/local/bin/"
# Release builds keep line tables for profiling; the image does not need them.
if command -v strip >/dev/null 2>&1; then strip --strip-debug "$ctx/rootfs/usr/local/bin/tenure"; fi
# The shared libraries the binary links, at the paths the loader expects.
for lib in $(ldd target/release/tenure | grep -o '/[^ ]*'); do
  mkdir -p "$ctx/rootfs$(dirname "$lib")"
  cp -L "$lib" "$ctx/rootfs$lib"
done
cp deploy/Dockerfile "$ctx/"
docker build -q -t "$tag" "$ctx"
docker images "$tag"
