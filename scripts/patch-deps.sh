#!/usr/bin/env bash
# Unpacks webrtc-rs 0.21.1 from the cargo registry into third_party/webrtc
# and applies p2p's patches to it (third_party/webrtc-0.21.1-*.patch); the
# [patch.crates-io] table of Cargo.toml builds against that copy. Each patch
# is a fix meant for upstream; third_party/README.md says what and why.
# Idempotent and quick when nothing changed; every script that builds runs it.
set -euo pipefail
cd "$(dirname "$0")/.."
version=0.21.1
dest=third_party/webrtc
patches=(third_party/webrtc-"$version"-*.patch)
want=$(cat "${patches[@]}" | sha256sum | cut -c1-16)
if [ "$(cat "$dest/.p2p-patches" 2>/dev/null)" = "$want" ]; then
  exit 0
fi

registry="${CARGO_HOME:-$HOME/.cargo}/registry/cache"
find_crate() { ls "$registry"/*/webrtc-"$version".crate 2>/dev/null | head -n1; }
crate=$(find_crate)
if [ -z "$crate" ]; then
  # Not downloaded yet: let cargo fetch it through a throwaway manifest
  # (this project's own manifest cannot resolve before the copy exists).
  tmp=$(mktemp -d)
  trap 'rm -rf "$tmp"' EXIT
  mkdir -p "$tmp/src"
  printf '[package]\nname = "fetch-webrtc"\nversion = "0.0.0"\nedition = "2021"\n[dependencies]\nwebrtc = "=%s"\n' \
    "$version" >"$tmp/Cargo.toml"
  touch "$tmp/src/lib.rs"
  cargo fetch --quiet --manifest-path "$tmp/Cargo.toml"
  crate=$(find_crate)
fi
[ -n "$crate" ] || { echo "patch-deps: cannot find webrtc-$version.crate" >&2; exit 1; }

rm -rf "$dest"
mkdir -p "$dest"
tar -xzf "$crate" -C "$dest" --strip-components=1
for p in "${patches[@]}"; do
  git apply --directory="$dest" "$p" || { echo "patch-deps: $p does not apply" >&2; exit 1; }
  echo "patch-deps: applied $(basename "$p")"
done
echo "$want" >"$dest/.p2p-patches"
