#!/usr/bin/env bash
# The engine comparison of bench/NOTES.md ("Which WebRTC engine"), re-run:
# examples/dc_loopback as it was on webrtc 0.17.2 (the last commit before
# the move) against the current one on 0.21, alternating, same machine, same
# run. Builds the old example in a temporary git worktree (release).
#
#   bash bench/engines.sh            # 200 MB, 3 runs each
#   MB=50 RUNS=5 bash bench/engines.sh
set -euo pipefail
cd "$(dirname "$0")/.."
OLD=${OLD:-c948d94}   # last commit on webrtc 0.17.2
MB=${MB:-200}
RUNS=${RUNS:-3}
work=$(mktemp -d)
trap 'git worktree remove --force "$work/old" >/dev/null 2>&1 || true; rm -rf "$work"' EXIT
git worktree add --detach "$work/old" "$OLD" >/dev/null
(cd "$work/old" && CARGO_TARGET_DIR="$work/target-old" cargo build -q --release --example dc_loopback)
cargo build -q --release --example dc_loopback
old="$work/target-old/release/examples/dc_loopback"
new="${CARGO_TARGET_DIR:-target}/release/examples/dc_loopback"

two() { # $1: binary, rest: env; prints the receiver's MB/s and both CPU-seconds
    local bin=$1; shift
    local d; d=$(mktemp -d -p "$work")
    env "$@" MB="$MB" /usr/bin/time -f "%U %S" -o "$d/rt" "$bin" recv "$d" > "$d/out" &
    local r=$!
    sleep 0.2
    env "$@" MB="$MB" /usr/bin/time -f "%U %S" -o "$d/st" "$bin" send "$d" > /dev/null
    wait "$r"
    local rate cpu
    rate=$(sed -n 's/.*: \([0-9.]*\) MB\/s.*/\1/p' "$d/out")
    cpu=$(cat "$d/rt" "$d/st" | awk '{s += $1 + $2} END {printf "%.1f", s}')
    echo "$rate MB/s, $cpu CPU-s"
}
one() { local bin=$1; shift; env "$@" MB="$MB" "$bin" | sed -n 's/.*: \([0-9.]*\) MB\/s.*/\1 MB\/s/p'; }

printf '| engine | one process | two processes (rate, CPU-s both peers) |\n|---|---|---|\n'
for i in $(seq "$RUNS"); do
    printf '| webrtc 0.17.2 (run %s) | %s | %s |\n' "$i" "$(one "$old")" "$(two "$old")"
    printf '| webrtc 0.21.1, defaults (run %s) | %s | %s |\n' "$i" "$(one "$new" PLAIN=1)" "$(two "$new" PLAIN=1)"
    printf '| webrtc 0.21.1, p2p settings (run %s) | %s | %s |\n' "$i" "$(one "$new")" "$(two "$new")"
done
