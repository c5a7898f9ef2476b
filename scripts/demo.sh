#!/usr/bin/env bash
# The main job, on one machine: a relay, a sender and a receiver, through the
# built-in relay. Installs what is needed and builds in release mode first.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/install-deps.sh
cargo build --release --quiet
p2p=target/release/p2p
out=${OUT_DIR:-out}
mkdir -p "$out"

pids=()
cleanup() { for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done; }
trap cleanup EXIT

# 1. The relay, on a free port; it prints its URL first thing.
"$p2p" signal --listen 127.0.0.1:0 >"$out/relay.url" 2>"$out/relay.log" &
pids+=($!)
for _ in $(seq 50); do [ -s "$out/relay.url" ] && break; sleep 0.1; done
url=$(head -n1 "$out/relay.url")
echo "relay:    $url"

# 2. A receiver that leaves once its sender has gone.
"$p2p" receive --signal "$url" --room demo --once >"$out/received.txt" 2>"$out/receiver.log" &
rx=$!
pids+=($rx)
sleep 0.5

# 3. A sender: 20 lines from stdin, to everyone in the room.
seq -f "line %g from the demo" 20 | "$p2p" send --signal "$url" --room demo 2>"$out/sender.log"
wait "$rx"

echo "received: $(wc -l <"$out/received.txt") lines into $out/received.txt"
head -n 3 "$out/received.txt"
echo "..."
