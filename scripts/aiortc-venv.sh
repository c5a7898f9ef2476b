#!/usr/bin/env bash
# aiortc, an independent WebRTC stack (Python), in a venv of its own at
# target/aiortc-venv with pinned versions: tests/it/whep.rs and the bench
# run a WHEP server made with it (tests/aiortc/whep_server.py).
set -euo pipefail
cd "$(dirname "$0")/.."
[ -x target/aiortc-venv/bin/python ] || python3 -m venv target/aiortc-venv
target/aiortc-venv/bin/pip install -q --disable-pip-version-check -r tests/aiortc/requirements.txt
