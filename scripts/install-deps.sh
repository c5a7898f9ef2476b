#!/usr/bin/env bash
# Installs every system package p2p needs to build, run and test, on Debian 12.
# Used by .ci/run, the Dockerfile and the README, so all three install the same.
set -euo pipefail

packages=(
  # build
  pkg-config build-essential
  # GStreamer: capture, encode, RTP (de)payloading, muxing, playback
  libgstreamer1.0-dev libgstreamer-plugins-base1.0-dev
  gstreamer1.0-plugins-base gstreamer1.0-plugins-good gstreamer1.0-plugins-bad
  gstreamer1.0-plugins-ugly gstreamer1.0-libav gstreamer1.0-tools
  gstreamer1.0-plugins-base-apps gstreamer1.0-x gstreamer1.0-alsa
  # tests: a NATS broker, a browser, process/network helpers; network
  # namespaces (iproute2) and packet loss/cuts in them (nftables)
  nats-server chromium procps iproute2 nftables socat openssl python3 python3-venv curl
  # tests across NATs: a STUN/TURN server
  coturn
  # tests: recordings must decode with an independent decoder too
  ffmpeg
)

sudo=""
if [ "$(id -u)" -ne 0 ]; then sudo="sudo"; fi

missing=()
for p in "${packages[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done

# Node.js drives the browser tests; the machine image usually has it.
command -v node >/dev/null 2>&1 || missing+=(nodejs)
command -v npm >/dev/null 2>&1 || missing+=(npm)

if [ ${#missing[@]} -eq 0 ]; then
  echo "install-deps: all ${#packages[@]} packages already installed"
  exit 0
fi

echo "install-deps: installing ${missing[*]}"
export DEBIAN_FRONTEND=noninteractive
$sudo apt-get update -q
$sudo apt-get install -y -q --no-install-recommends "${missing[@]}"
