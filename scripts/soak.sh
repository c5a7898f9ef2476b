#!/usr/bin/env bash
# Soak: a media sender streaming to 3 recorders for MINUTES, with churn (one
# recorder leaves and a new one joins every CHURN seconds). Samples the
# sender's and the relay's RSS and open file descriptors, prints them over
# time, checks every recording decodes, and fails on unbounded growth.
#
#   bash scripts/soak.sh            # 2 minutes (what CI runs)
#   bash scripts/soak.sh 30         # 30 minutes
#   CHURN=3 bash scripts/soak.sh 5  # faster churn
set -euo pipefail
cd "$(dirname "$0")/.."
minutes=${1:-2}
churn=${CHURN:-5}
bash scripts/patch-deps.sh
cargo build --bins --quiet
p2p=$PWD/target/debug/p2p
out=${SOAK_DIR:-$(mktemp -d)}
pids=()
cleanup() {
  for p in "${pids[@]}"; do kill -INT "$p" 2>/dev/null || true; done
  sleep 1
  for p in "${pids[@]}"; do kill -KILL "$p" 2>/dev/null || true; done
}
trap cleanup EXIT

rss() { awk '/^VmRSS:/ {print $2}' "/proc/$1/status" 2>/dev/null || echo 0; }
fds() { ls "/proc/$1/fd" 2>/dev/null | wc -l; }

"$p2p" signal --listen 127.0.0.1:0 >"$out/relay.url" 2>"$out/relay.log" &
relay=$!
pids+=("$relay")
for _ in $(seq 100); do [ -s "$out/relay.url" ] && break; sleep 0.05; done
url=$(head -n1 "$out/relay.url")

# Media only: the sender does not read stdin.
"$p2p" send --signal "$url" --room soak --test-source -q </dev/null 2>"$out/sender.log" &
sender=$!
pids+=("$sender")

n=0
recorders=()
start_recorder() {
  n=$((n + 1))
  "$p2p" receive --signal "$url" --room soak --record "$out/rec-$n.webm" 2>"$out/rec-$n.log" &
  recorders+=($!)
  pids+=($!)
}
for _ in 1 2 3; do start_recorder; done

end=$(( $(date +%s) + minutes * 60 ))
printf '%6s %12s %10s %12s %10s %6s\n' seconds sender_kib sender_fds relay_kib relay_fds files
samples=()
t0=$(date +%s)
next_churn=$(( t0 + churn ))
while [ "$(date +%s)" -lt "$end" ]; do
  sleep 1
  now=$(date +%s)
  if [ "$now" -ge "$next_churn" ]; then
    # The oldest recorder leaves cleanly (its file is finalised); a new one joins.
    kill -INT "${recorders[0]}" 2>/dev/null || true
    wait "${recorders[0]}" 2>/dev/null || true
    recorders=("${recorders[@]:1}")
    start_recorder
    next_churn=$(( now + churn ))
  fi
  if [ $(( (now - t0) % 5 )) -eq 0 ]; then
    line="$((now - t0)) $(rss "$sender") $(fds "$sender") $(rss "$relay") $(fds "$relay") $n"
    samples+=("$line")
    printf '%6s %12s %10s %12s %10s %6s\n' $line
  fi
done
for r in "${recorders[@]}"; do kill -INT "$r" 2>/dev/null || true; wait "$r" 2>/dev/null || true; done

# Every finished recording must decode to VP8 + Opus. A recorder stopped
# before its first key frame keeps no file and says so; only the last one to
# join (stopped at once when the run ends) may.
bad=0
for i in $(seq "$n"); do
  f="$out/rec-$i.webm"
  if [ ! -e "$f" ]; then
    if [ "$i" -lt "$n" ] || ! grep -q "nothing saved" "$out/rec-$i.log"; then
      echo "soak: recorder $i left no file; it logged:" >&2
      sed 's/^/  /' "$out/rec-$i.log" >&2
      bad=1
    fi
    continue
  fi
  info=$(gst-discoverer-1.0 -t 60 "$f" 2>&1 || true)
  if ! grep -q "video #.*VP8" <<<"$info"; then
    echo "soak: $f is not a valid recording; gst-discoverer said:" >&2
    sed 's/^/  /' <<<"$info" >&2
    echo "soak: its recorder logged:" >&2
    sed 's/^/  /' "${f%.webm}.log" >&2
    bad=1
  fi
done

# Growth: the last third of the run against the middle third (after
# start-up), so a steady state passes and a leak fails.
python3 - "$bad" "${samples[@]}" <<'EOF'
import sys
bad = int(sys.argv[1])
rows = [list(map(int, s.split())) for s in sys.argv[2:]]
if len(rows) < 6:
    print("soak: too few samples; run longer", file=sys.stderr)
    sys.exit(1)
third = len(rows) // 3
mid, last = rows[third:2 * third], rows[2 * third:]
avg = lambda rs, i: sum(r[i] for r in rs) / len(rs)
failed = bad
for i, name, limit in [(1, "sender RSS", 1.25), (3, "relay RSS", 1.25)]:
    a, b = avg(mid, i), avg(last, i)
    growth = b / a if a else 1.0
    print(f"{name}: {a/1024:.1f} MiB -> {b/1024:.1f} MiB ({(growth-1)*100:+.1f} %)")
    if growth > limit:
        print(f"soak: {name} grew more than {(limit-1)*100:.0f} %", file=sys.stderr)
        failed = 1
for i, name in [(2, "sender fds"), (4, "relay fds")]:
    a, b = avg(mid, i), avg(last, i)
    print(f"{name}: {a:.0f} -> {b:.0f}")
    if b > a + 20:
        print(f"soak: {name} keep growing", file=sys.stderr)
        failed = 1
print(f"recordings: {rows[-1][5]} made, all decode" if not bad else "recordings: some invalid")
sys.exit(failed)
EOF
