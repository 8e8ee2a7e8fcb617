#!/usr/bin/env bash
# Installs the tansu broker (pinned 0.6.0) used by the end-to-end tests,
# once, into a cache outside the repository. Prints the binary's path.
#
# WAYBILL_CACHE (default ~/.cache/waybill) chooses the cache directory.
# The first build takes about 10 minutes on 2 cores.
set -euo pipefail

version=0.6.0
cache="${WAYBILL_CACHE:-$HOME/.cache/waybill}"
root="$cache/tansu-$version"
bin="$root/bin/tansu"

if [ -x "$bin" ] && "$bin" --version 2>/dev/null | grep -q "$version"; then
  echo "$bin"
  exit 0
fi

echo "installing tansu $version into $root (first time only, ~10 min)..." >&2
mkdir -p "$cache"
# Its own target dir keeps the build cache apart from the workspace's.
CARGO_TARGET_DIR="$cache/tansu-build" cargo install tansu \
  --version "$version" --locked --features dynostore,libsql --root "$root" >&2
rm -rf "$cache/tansu-build"
echo "$bin"
