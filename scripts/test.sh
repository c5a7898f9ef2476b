#!/usr/bin/env bash
# The README's test command: installs what the tests need, then runs them
# all: Rust unit and integration tests (real relay, peers, GStreamer, NATS),
# then the browser tests (real headless Chromium against the real binary).
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/install-deps.sh
bash scripts/patch-deps.sh
# The binary, and examples/wan.rs, which the constrained-link tests run
# (--all-targets below builds examples as tests, not as programs).
cargo build --bins --examples
# Before the Rust tests: tests/it/nat.rs drives a page through it too.
npm ci --prefix tests/browser --no-audit --no-fund --loglevel=error
# aiortc, an independent WebRTC stack: tests/it/whep.rs watches a WHEP
# server made with it.
bash scripts/aiortc-venv.sh
# The constrained-link tests run alone afterwards: each encodes 720p in
# three layers, and beside other tests on a 2-core machine their frame
# rates would measure the machine, not the network.
cargo test --all-targets -- --test-threads=2 --skip bandwidth:: "$@"
cargo test --test it bandwidth:: -- --test-threads=1 "$@"
P2P_BIN="$PWD/target/debug/p2p" node --test --test-concurrency=1 tests/browser/
