#!/usr/bin/env bash
# Unpacks each crate p2p patches from the cargo registry into
# third_party/<crate> and applies p2p's patches to it
# (third_party/<crate>-<version>-<topic>.patch); the [patch.crates-io] table
# of Cargo.toml builds against those copies. Each patch is a fix meant for
# upstream; third_party/README.md says what and why.
# Idempotent and quick when nothing changed; every script that builds runs it.
set -euo pipefail
cd "$(dirname "$0")/.."

registry="${CARGO_HOME:-$HOME/.cargo}/registry/cache"
find_crate() { ls "$registry"/*/"$1-$2".crate 2>/dev/null | head -n1; }

# Prints the registry's .crate file for crate $1 version $2, downloading it
# first if need be (through a throwaway manifest: this project's own manifest
# cannot resolve before the patched copies exist).
fetch_crate() {
  local crate
  crate=$(find_crate "$1" "$2")
  if [ -z "$crate" ]; then
    local tmp
    tmp=$(mktemp -d)
    mkdir -p "$tmp/src"
    printf '[package]\nname = "fetch-%s"\nversion = "0.0.0"\nedition = "2021"\n[dependencies]\n%s = "=%s"\n' \
      "$1" "$1" "$2" >"$tmp/Cargo.toml"
    touch "$tmp/src/lib.rs"
    cargo fetch --quiet --manifest-path "$tmp/Cargo.toml"
    rm -rf "$tmp"
    crate=$(find_crate "$1" "$2")
  fi
  [ -n "$crate" ] || { echo "patch-deps: cannot find $1-$2.crate" >&2; exit 1; }
  echo "$crate"
}

# Every <crate>-<version>-<topic>.patch names its crate and version.
declare -A versions=()
for p in third_party/*.patch; do
  base=$(basename "$p" .patch)
  if [[ $base =~ ^(.+)-([0-9]+\.[0-9]+\.[0-9]+)-[a-z0-9-]+$ ]]; then
    versions[${BASH_REMATCH[1]}]=${BASH_REMATCH[2]}
  else
    echo "patch-deps: $p is not named <crate>-<version>-<topic>.patch" >&2
    exit 1
  fi
done

for name in "${!versions[@]}"; do
  version=${versions[$name]}
  dest=third_party/$name
  patches=(third_party/"$name-$version"-*.patch)
  want=$(cat "${patches[@]}" | sha256sum | cut -c1-16)
  if [ "$(cat "$dest/.p2p-patches" 2>/dev/null)" = "$want" ]; then
    continue
  fi
  crate=$(fetch_crate "$name" "$version")
  rm -rf "$dest"
  mkdir -p "$dest"
  tar -xzf "$crate" -C "$dest" --strip-components=1
  for p in "${patches[@]}"; do
    git apply --directory="$dest" "$p" || { echo "patch-deps: $p does not apply" >&2; exit 1; }
    echo "patch-deps: applied $(basename "$p")"
  done
  echo "$want" >"$dest/.p2p-patches"
done
