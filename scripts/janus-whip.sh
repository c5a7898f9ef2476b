#!/usr/bin/env bash
# Janus + simple-whip-server on loopback, for the WHIP tests (issue 14).
#
#   scripts/janus-whip.sh start DIR [--ws PORT] [--http PORT] [--whip PORT] [--veth NAME]
#   scripts/janus-whip.sh stop DIR
#   scripts/janus-whip.sh teardown [--veth NAME]
#
# start: installs Debian's `janus` and `libjs-janus-gateway` if missing,
# unpacks `simple-whip-server` (+ its npm deps) into a cache, starts Janus
# (config in DIR/conf, log DIR/janus.log, pid DIR/janus.pid) and
# simple-whip-server (DIR/sws, log DIR/whip.log, pid DIR/whip.pid), waits
# until both answer and prints the WHIP base URL on stdout, e.g.
# http://127.0.0.1:7080/whip (nothing else goes to stdout; progress and
# errors go to stderr). Ports left out are picked free on 127.0.0.1.
# DIR/env holds the addresses, shell-sourceable:
#   JANUS_WS=ws://127.0.0.1:P  JANUS_HTTP=http://127.0.0.1:P/janus  WHIP_BASE=http://127.0.0.1:P/whip
#
# Rooms (janus.plugin.videoroom, no secrets): 1234 = VP8+Opus,
# 1235 = H.264 (profile-level-id 42e01f)+Opus; bitrate 2 Mb/s, PLI every 2 s.
#
# Endpoints are made with plain curl (simple-whip-server's own API):
#   curl -sf -H 'Content-Type: application/json' -d '{"id":"vp8","room":1234}' "$WHIP_BASE/create"
#     optional fields: "token":"T", "iceServers":[{"uri":…}], "recipient":{host,audioPort,videoPort,videoRtcpPort}
#   publish to $WHIP_BASE/endpoint/vp8; list: GET $WHIP_BASE/endpoints; destroy: DELETE $WHIP_BASE/endpoint/vp8
#
# Janus only gathers ICE candidates on 198.18.0.2 (P2P_JANUS_ADDR), which
# lives on a veth pair (NAME0/NAME1, default p2pj0/p2pj1; --veth or
# P2P_JANUS_VETH): Janus skips loopback interfaces, and a veth end counts as
# RUNNING only while both ends are up. The address is one of this machine's
# own, so every packet to it stays on the machine (delivered over lo). It is
# not a 127/8 one: Linux refuses (EINVAL) to send from a 127/8 address
# bound on a non-loopback device to any other address, so Janus at
# 127.0.0.2 only ever answers peers that are at 127.0.0.2 themselves.
# The pair is made once and shared by every run; `stop` leaves it (an
# address that vanishes breaks ICE pairs other local processes made over
# it), `teardown` removes it. Needs root.
#
# stop: ends both processes (by their pid files).
#
# Environment: P2P_CACHE_DIR (default ~/.cache/p2p), P2P_JANUS_TIMEOUT
# (seconds to wait for readiness, default 30), P2P_JANUS_ADDR (Janus's ICE
# address, default 198.18.0.2), P2P_JANUS_DEBUG (Janus log level, 0-7,
# default 4).
set -euo pipefail

log() { echo "janus-whip: $*" >&2; }
die() { log "error: $*"; exit 1; }

CACHE_ROOT="${P2P_CACHE_DIR:-${XDG_CACHE_HOME:-$HOME/.cache}/p2p}"
SWS_CACHE="$CACHE_ROOT/simple-whip-server"
TIMEOUT="${P2P_JANUS_TIMEOUT:-30}"
# 198.18.0.0/15: set aside for benchmarks (RFC 2544), routed nowhere.
ADDR="${P2P_JANUS_ADDR:-198.18.0.2}"
# npm deps of simple-whip-server (its .deb has no package.json); colors is
# pinned: later releases are the sabotaged ones.
SWS_DEPS=(express@4 body-parser@1 cors@2 async@3 colors@1.4.0 debug@4 websocket@1)
VETH_LOCK=/run/lock/p2p-janus-veth.lock

# ---- helpers ---------------------------------------------------------------

installed() { dpkg-query -W -f='${Status}' "$1" 2>/dev/null | grep -q 'install ok installed'; }

# Installs janus + janus.js without letting the postinst start a system Janus.
install_janus() {
  local missing=() p
  for p in janus libjs-janus-gateway; do installed "$p" || missing+=("$p"); done
  [ ${#missing[@]} -eq 0 ] && return 0
  log "installing ${missing[*]}"
  local made_policy=0
  if [ ! -e /usr/sbin/policy-rc.d ]; then
    printf '#!/bin/sh\nexit 101\n' >/usr/sbin/policy-rc.d
    chmod +x /usr/sbin/policy-rc.d
    made_policy=1
  fi
  export DEBIAN_FRONTEND=noninteractive
  if ! apt-get install -y -q --no-install-recommends "${missing[@]}" >&2; then
    apt-get update -q >&2
    apt-get install -y -q --no-install-recommends "${missing[@]}" >&2
  fi
  if [ "$made_policy" = 1 ]; then rm -f /usr/sbin/policy-rc.d; fi
  # Belt and braces: a system Janus (8088/8188) must not be left running.
  if [ -x /etc/init.d/janus ] && /etc/init.d/janus status >/dev/null 2>&1; then
    log "stopping the Janus that the package install started"
    /etc/init.d/janus stop >&2 || true
  fi
}

# Fills $SWS_CACHE/{pkg,node_modules} once (under a lock, staged then moved).
prepare_sws_cache() {
  mkdir -p "$SWS_CACHE"
  local stamp="deps: ${SWS_DEPS[*]}"
  exec 8>"$SWS_CACHE/.lock"
  flock 8
  if [ -f "$SWS_CACHE/ready" ] && [ "$(cat "$SWS_CACHE/ready")" = "$stamp" ] &&
     [ -f "$SWS_CACHE/pkg/usr/share/simple-whip-server/src/server.js" ] && [ -d "$SWS_CACHE/node_modules" ]; then
    exec 8>&-; return 0
  fi
  log "preparing simple-whip-server in $SWS_CACHE"
  rm -rf "$SWS_CACHE/pkg" "$SWS_CACHE/node_modules" "$SWS_CACHE/ready" "$SWS_CACHE"/stage.*
  local stage; stage="$(mktemp -d "$SWS_CACHE/stage.XXXXXX")"
  if ! (cd "$stage" && apt-get download simple-whip-server >&2); then
    apt-get update -q >&2
    (cd "$stage" && apt-get download simple-whip-server >&2) || die "apt-get download simple-whip-server failed"
  fi
  dpkg-deb -x "$stage"/simple-whip-server_*.deb "$stage/pkg"
  command -v npm >/dev/null || die "npm is needed (apt-get install npm, or scripts/install-deps.sh)"
  npm install --prefix "$stage" --no-save --no-package-lock --no-audit --no-fund --loglevel=error \
    "${SWS_DEPS[@]}" >&2 || die "npm install of simple-whip-server's dependencies failed"
  mv "$stage/pkg" "$SWS_CACHE/pkg"
  mv "$stage/node_modules" "$SWS_CACHE/node_modules"
  rm -rf "$stage"
  echo "$stamp" >"$SWS_CACHE/ready"
  exec 8>&-
}

free_port() {
  node -e "const s=require('net').createServer();s.listen(0,'127.0.0.1',()=>{console.log(s.address().port);s.close()})"
}

# jset FILE SECTION KEY VALUE: sets KEY in a libconfig section of a .jcfg
# (replaces the first line, commented or not, that sets KEY there; else appends).
jset() {
  awk -v sec="$2" -v key="$3" -v val="$4" '
    !done && $0 ~ "^" sec ":[ \t]*[{]" { insec = 1; print; next }
    insec && !done && $0 ~ "^[ \t]*#?[ \t]*" key "[ \t]*=" { print "\t" key " = " val; done = 1; next }
    insec && $0 ~ "^}" { if (!done) print "\t" key " = " val; done = 1; insec = 0 }
    { print }
    END { if (!done) exit 3 }
  ' "$1" >"$1.tmp" || die "cannot set $2.$3 in $1"
  mv "$1.tmp" "$1"
}

write_janus_conf() {
  local conf="$DIR/conf"
  rm -rf "$conf"
  cp -a /etc/janus "$conf"
  local j="$conf/janus.jcfg"
  jset "$j" general configs_folder "\"$conf\""
  # The address Janus writes in its SDP (c=/o= lines); ICE uses only $ADDR anyway.
  jset "$j" general interface "\"$ADDR\""
  jset "$j" nat ice_enforce_list "\"$ADDR\""
  jset "$j" nat ignore_mdns true
  jset "$j" nat nice_debug false
  jset "$j" plugins disable '"libjanus_audiobridge.so,libjanus_duktape.so,libjanus_echotest.so,libjanus_lua.so,libjanus_nosip.so,libjanus_recordplay.so,libjanus_sip.so,libjanus_streaming.so,libjanus_textroom.so,libjanus_videocall.so,libjanus_voicemail.so"'
  jset "$j" transports disable '"libjanus_mqtt.so,libjanus_nanomsg.so,libjanus_pfunix.so,libjanus_rabbitmq.so"'
  local w="$conf/janus.transport.websockets.jcfg"
  jset "$w" general ws true
  jset "$w" general ws_port "$WS_PORT"
  jset "$w" general ws_ip '"127.0.0.1"'
  jset "$w" general wss false
  local h="$conf/janus.transport.http.jcfg"
  jset "$h" general http true
  jset "$h" general port "$HTTP_PORT"
  jset "$h" general ip '"127.0.0.1"'
  cat >"$conf/janus.plugin.videoroom.jcfg" <<'EOF'
# Written by scripts/janus-whip.sh: two open rooms, no secret, no admin_key.
general: {
}
room-1234: {
	description = "p2p vp8"
	publishers = 4
	bitrate = 2000000
	fir_freq = 2
	audiocodec = "opus"
	videocodec = "vp8"
}
room-1235: {
	description = "p2p h264"
	publishers = 4
	bitrate = 2000000
	fir_freq = 2
	audiocodec = "opus"
	videocodec = "h264"
	h264_profile = "42e01f"
}
EOF
}

# A per-DIR copy of the server (its config.js is per run), sharing node_modules.
write_sws() {
  local app="$SWS_CACHE/pkg/usr/share/simple-whip-server"
  rm -rf "$DIR/sws"
  mkdir -p "$DIR/sws/src" "$DIR/sws/web"
  cp "$app/src/server.js" "$app/src/whip-janus.js" "$DIR/sws/src/"
  ln -s "$SWS_CACHE/node_modules" "$DIR/sws/node_modules"
  # Listen on loopback only (upstream binds *:port).
  sed -i "s/http\.listen(config\.port, function/http.listen(config.port, '127.0.0.1', function/" "$DIR/sws/src/server.js"
  grep -q "listen(config.port, '127.0.0.1'" "$DIR/sws/src/server.js" || log "warning: simple-whip-server will listen on *:$WHIP_PORT"
  cat >"$DIR/sws/src/config.js" <<EOF
// Written by scripts/janus-whip.sh
module.exports = {
  janus: { address: 'ws://127.0.0.1:$WS_PORT' },
  port: $WHIP_PORT,
  rest: '/whip',
  allowTrickle: true,
  strictETags: false,
  iceServers: []
};
EOF
}

# The veth pair carrying $ADDR, made once and left in place: `stop` keeps
# it, `teardown` removes it. Every p2p process on this machine gathers a
# host candidate on $ADDR too, and may pair over it with another local
# process; an address that vanishes breaks those connections (seen: a
# recorder in another test lost its sender when a Janus run stopped).
veth_acquire() {
  mkdir -p "$(dirname "$VETH_LOCK")"
  exec 9>"$VETH_LOCK"
  flock 9
  if ! ip link show "${VETH}0" >/dev/null 2>&1; then
    ip link add "${VETH}0" type veth peer name "${VETH}1" || die "cannot create veth ${VETH}0 (root/CAP_NET_ADMIN needed)"
  fi
  # Not `ip … | grep -q`: grep's early exit fails the pipe (pipefail).
  local addrs; addrs="$(ip -4 addr show dev "${VETH}0")"
  [[ "$addrs" == *"inet $ADDR/32"* ]] || ip addr add "$ADDR/32" dev "${VETH}0"
  ip link set "${VETH}0" up
  ip link set "${VETH}1" up 2>/dev/null || true
  exec 9>&-
}

# kill_pidfile FILE COMM: TERM (then KILL after 5 s) the process in FILE, if it is still COMM.
kill_pidfile() {
  local f="$1" comm="$2" pid i
  [ -f "$f" ] || return 0
  pid="$(cat "$f")"
  if [ -n "$pid" ] && [ "$(cat "/proc/$pid/comm" 2>/dev/null)" = "$comm" ]; then
    kill -TERM "$pid" 2>/dev/null || true
    for i in $(seq 50); do kill -0 "$pid" 2>/dev/null || break; sleep 0.1; done
    kill -0 "$pid" 2>/dev/null && kill -KILL "$pid" 2>/dev/null || true
  fi
  rm -f "$f"
}

alive() { [ -f "$1" ] && kill -0 "$(cat "$1")" 2>/dev/null; }

fail_with_log() { # MESSAGE LOGFILE
  log "error: $1; last lines of $2:"
  tail -n 40 "$2" >&2 2>/dev/null || true
  do_stop
  exit 1
}

# ---- commands --------------------------------------------------------------

do_start() {
  [ "$(id -u)" -eq 0 ] || die "needs root (apt-get, veth)"
  if alive "$DIR/janus.pid" || alive "$DIR/whip.pid"; then die "already running in $DIR (stop it first)"; fi
  mkdir -p "$DIR"
  DIR="$(cd "$DIR" && pwd)"
  local t0=$SECONDS
  install_janus
  prepare_sws_cache
  WS_PORT="${WS_PORT:-$(free_port)}"
  HTTP_PORT="${HTTP_PORT:-$(free_port)}"
  WHIP_PORT="${WHIP_PORT:-$(free_port)}"
  local p
  for p in "$WS_PORT" "$HTTP_PORT" "$WHIP_PORT"; do
    if (exec 3<>"/dev/tcp/127.0.0.1/$p") 2>/dev/null; then die "port $p on 127.0.0.1 is already in use"; fi
  done
  write_janus_conf
  write_sws
  veth_acquire

  janus -F "$DIR/conf" -C "$DIR/conf/janus.jcfg" -E "$ADDR" -d "${P2P_JANUS_DEBUG:-4}" -D -o \
    </dev/null >"$DIR/janus.log" 2>&1 &
  echo $! >"$DIR/janus.pid"
  local deadline=$((SECONDS + TIMEOUT))
  until curl -sf -o /dev/null "http://127.0.0.1:$HTTP_PORT/janus/info"; do
    alive "$DIR/janus.pid" || fail_with_log "Janus exited" "$DIR/janus.log"
    ! grep -q '\[FATAL\]' "$DIR/janus.log" || fail_with_log "Janus reported a fatal error (port in use?)" "$DIR/janus.log"
    [ $SECONDS -lt $deadline ] || fail_with_log "Janus did not answer on 127.0.0.1:$HTTP_PORT within ${TIMEOUT}s" "$DIR/janus.log"
    sleep 0.1
  done

  (cd "$DIR/sws" && exec env DEBUG='whip:*,janus:*,-janus:vdebug' DEBUG_COLORS=0 node src/server.js --no-color) \
    </dev/null >"$DIR/whip.log" 2>&1 &
  echo $! >"$DIR/whip.pid"
  until grep -q 'WHIP REST API listening' "$DIR/whip.log" &&
        curl -sf -o /dev/null "http://127.0.0.1:$WHIP_PORT/whip/healthcheck"; do
    alive "$DIR/whip.pid" || fail_with_log "simple-whip-server exited" "$DIR/whip.log"
    alive "$DIR/janus.pid" || fail_with_log "Janus exited" "$DIR/janus.log"
    [ $SECONDS -lt $deadline ] || fail_with_log "simple-whip-server not ready on 127.0.0.1:$WHIP_PORT within ${TIMEOUT}s" "$DIR/whip.log"
    sleep 0.1
  done
  cat >"$DIR/env" <<EOF
JANUS_WS=ws://127.0.0.1:$WS_PORT
JANUS_HTTP=http://127.0.0.1:$HTTP_PORT/janus
WHIP_BASE=http://127.0.0.1:$WHIP_PORT/whip
EOF
  log "ready in $((SECONDS - t0))s: Janus ws=$WS_PORT http=$HTTP_PORT, WHIP $WHIP_PORT, veth ${VETH}0 (logs in $DIR)"
  echo "http://127.0.0.1:$WHIP_PORT/whip"
}

do_stop() {
  kill_pidfile "$DIR/whip.pid" node
  kill_pidfile "$DIR/janus.pid" janus
}

usage() {
  echo "usage: $0 start DIR [--ws PORT] [--http PORT] [--whip PORT] [--veth NAME] | stop DIR | teardown [--veth NAME]" >&2
  exit 2
}

[ $# -ge 1 ] || usage
CMD="$1"; shift
DIR=""
if [ "$CMD" != teardown ]; then
  [ $# -ge 1 ] || usage
  DIR="$1"; shift
fi
WS_PORT="" HTTP_PORT="" WHIP_PORT=""
VETH="${P2P_JANUS_VETH:-p2pj}"
while [ $# -gt 0 ]; do
  case "$1" in
    --ws) WS_PORT="$2"; shift 2 ;;
    --http) HTTP_PORT="$2"; shift 2 ;;
    --whip) WHIP_PORT="$2"; shift 2 ;;
    --veth) VETH="$2"; shift 2 ;;
    *) usage ;;
  esac
done
[ ${#VETH} -le 14 ] || die "veth name too long: $VETH (the interface names are NAME0/NAME1, 15 chars max)"
case "$CMD" in
  start) do_start ;;
  stop) [ -d "$DIR" ] || exit 0; DIR="$(cd "$DIR" && pwd)"; do_stop ;;
  teardown) ip link del "${VETH}0" 2>/dev/null || true ;;
  *) usage ;;
esac
