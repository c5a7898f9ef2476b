#!/usr/bin/env bash
# The main job, on one machine: a relay, a media sender and a recording
# receiver, through the built-in relay. Installs what is needed and builds
# in release mode first. Usage: scripts/demo.sh [SECONDS]
set -euo pipefail
cd "$(dirname "$0")/.."
seconds=${1:-6}
bash scripts/install-deps.sh
bash scripts/patch-deps.sh
cargo build --release --quiet
p2p=target/release/p2p
out=${OUT_DIR:-out}
mkdir -p "$out"
rm -f "$out/demo.webm"

pids=()
cleanup() { for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done; }
trap cleanup EXIT

# 1. The relay, on a free port; it prints its URL first thing.
"$p2p" signal --listen 127.0.0.1:0 >"$out/relay.url" 2>"$out/relay.log" &
pids+=($!)
for _ in $(seq 50); do [ -s "$out/relay.url" ] && break; sleep 0.1; done
url=$(head -n1 "$out/relay.url")
echo "relay:     $url"

# 2. A sender: a moving test pattern with a clock and a tone, VP8 + Opus,
#    plus the lines on its stdin over a data channel.
{ sleep 2; echo "hello from the sender"; sleep $((seconds + 5)); } |
  "$p2p" send --signal "$url" --room demo --test-source --data 2>"$out/sender.log" &
pids+=($!)

# 3. A receiver that records what arrives and prints the data lines.
"$p2p" receive --signal "$url" --room demo --record "$out/demo.webm" --overwrite \
  >"$out/received.txt" 2>"$out/receiver.log" &
rx=$!
pids+=($rx)
echo "recording: $seconds s into $out/demo.webm"
sleep "$seconds"
kill -INT "$rx"
wait "$rx"

echo "data:      $(cat "$out/received.txt")"
echo "recording:"
if command -v gst-discoverer-1.0 >/dev/null; then
  gst-discoverer-1.0 "$out/demo.webm" | grep -E "Duration|container|video #|audio #|Width|Height" | sed 's/^/  /'
else
  ls -l "$out/demo.webm"
fi
grep -E "saved|recording" "$out/receiver.log" | sed 's/^.*Z *//; s/^/  /' || true
