#!/usr/bin/env bash
# Benchmark suite of issue 7: builds the release binary and the load generator,
# measures every figure next to a baseline in the same run, prints a Markdown
# table and writes BENCHMARKS.md.
#
#   bash scripts/bench.sh            # full suite (~50 min on 2 cores; figure 10,
#                                    # the link matrix, three runs a cell, is ~35)
#   bash scripts/bench.sh --quick    # CI: fewer runs, shorter (< 2 min); writes
#                                    # target/bench/BENCHMARKS.quick.md instead
#   bash scripts/bench.sh --only 4,5 # some figures (1 to 12)
#   bash scripts/bench.sh --no-write # print the table, leave BENCHMARKS.md alone
#
# Needs: cargo, GStreamer (scripts/install-deps.sh), python3, socat, nats-server,
# node + chromium (figure 1's Chromium baseline; playwright-core from
# tests/browser, installed with npm ci when missing).
# Exit status: 0 when every figure was measured, non-zero otherwise.
# Every process it starts is ended on exit, whatever the exit.
set -euo pipefail
cd "$(dirname "$0")/.."

COMMAND="scripts/bench.sh${*:+ $*}"
ARGS=()
for a in "$@"; do
    case "$a" in
        -h|--help) sed -n '2,17p' "$0" | sed 's/^# \{0,1\}//'; exit 0 ;;
        *) ARGS+=("$a") ;;
    esac
done

missing=()
for tool in cargo python3 socat nats-server node; do
    command -v "$tool" >/dev/null 2>&1 || [ -x "/usr/sbin/$tool" ] || missing+=("$tool")
done
if [ ${#missing[@]} -gt 0 ]; then
    echo "bench.sh: missing ${missing[*]} (see scripts/install-deps.sh)" >&2
    exit 2
fi
export PATH="$PATH:/usr/sbin"

# 10,000 WebSocket/NATS connections: the relay, nats-server and the load
# generator each hold one descriptor per connection.
ulimit -n "$(ulimit -Hn)" 2>/dev/null || true
if [ "$(ulimit -n)" != unlimited ] && [ "$(ulimit -n)" -lt 12000 ]; then
    echo "bench.sh: ulimit -n is $(ulimit -n); the 10k-connection figure needs 12000+" >&2
fi

if [ ! -d tests/browser/node_modules/playwright-core ]; then
    echo "[bench] npm ci --prefix tests/browser (playwright-core, for the Chromium baseline)" >&2
    npm ci --prefix tests/browser --no-audit --no-fund --loglevel=error
fi

# Figure 12's baseline: a WHEP server on aiortc (an independent stack).
bash scripts/aiortc-venv.sh

TARGET="${CARGO_TARGET_DIR:-target}"
echo "[bench] cargo build --release (p2p, examples/loadgen, examples/dc_loopback, examples/wan)" >&2
bash scripts/patch-deps.sh
cargo build --release --quiet --bin p2p --example loadgen --example dc_loopback --example wan

# Ends the driver and everything it started (its children run in their own
# process groups; the driver kills them on exit, this is the safety net).
DRIVER=
cleanup() {
    if [ -n "$DRIVER" ] && kill -0 "$DRIVER" 2>/dev/null; then
        kill -TERM "$DRIVER" 2>/dev/null || true
        for _ in 1 2 3 4 5 6 7 8 9 10; do
            kill -0 "$DRIVER" 2>/dev/null || break
            sleep 0.5
        done
        kill -KILL "$DRIVER" 2>/dev/null || true
    fi
}
trap cleanup EXIT
trap 'exit 130' INT
trap 'exit 143' TERM

python3 bench/run.py --p2p "$TARGET/release/p2p" --loadgen "$TARGET/release/examples/loadgen" \
    --command "$COMMAND" ${ARGS[@]+"${ARGS[@]}"} &
DRIVER=$!
set +e
wait "$DRIVER"
status=$?
DRIVER=
exit "$status"
