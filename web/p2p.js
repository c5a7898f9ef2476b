// p2p.js — the wire protocol of PROTOCOL.md for browsers (and, for the crypto
// helpers, Node.js): a Sender and a Receiver (section 1), a WebSocket driver
// for `p2p signal` (section 2) and end-to-end encrypted signaling (section 3).
//
// Plain ES module, no dependencies. Sender/Receiver only touch RTCPeerConnection
// inside their methods, so importing this file in Node.js (for the crypto
// tests) works.

const subtle = globalThis.crypto.subtle;
const encoder = new TextEncoder();
const decoder = new TextDecoder();

// ---------------------------------------------------------------------------
// Section 3: end-to-end encrypted signaling
// ---------------------------------------------------------------------------

export function toHex(bytes) {
  return Array.from(new Uint8Array(bytes), (b) => b.toString(16).padStart(2, '0')).join('');
}

export function fromHex(hex) {
  const out = new Uint8Array(hex.length / 2);
  for (let i = 0; i < out.length; i++) out[i] = parseInt(hex.substr(i * 2, 2), 16);
  return out;
}

export function toBase64(bytes) {
  let s = '';
  const u8 = new Uint8Array(bytes);
  for (let i = 0; i < u8.length; i += 0x8000) {
    s += String.fromCharCode.apply(null, u8.subarray(i, i + 0x8000));
  }
  return btoa(s);
}

export function fromBase64(b64) {
  const s = atob(b64);
  const out = new Uint8Array(s.length);
  for (let i = 0; i < s.length; i++) out[i] = s.charCodeAt(i);
  return out;
}

/** Lowercase hex SHA-256 of ns.join(":") — the hashed namespace ("subject"). */
export async function hashNamespace(ns) {
  return toHex(await subtle.digest('SHA-256', encoder.encode(ns.join(':'))));
}

/** AES-256-GCM key = SHA-256(secret). */
export async function deriveKey(secret) {
  const raw = await subtle.digest('SHA-256', encoder.encode(secret));
  return subtle.importKey('raw', raw, { name: 'AES-GCM' }, false, ['encrypt', 'decrypt']);
}

/** Encrypts text: returns IV (12 bytes) || ciphertext+tag. `iv` only for tests. */
export async function encryptBytes(key, text, iv = globalThis.crypto.getRandomValues(new Uint8Array(12))) {
  const ct = new Uint8Array(await subtle.encrypt({ name: 'AES-GCM', iv }, key, encoder.encode(text)));
  const out = new Uint8Array(iv.length + ct.length);
  out.set(iv, 0);
  out.set(ct, iv.length);
  return out;
}

/** Decrypts IV || ciphertext+tag to text; throws if it does not authenticate. */
export async function decryptBytes(key, wire) {
  const u8 = new Uint8Array(wire);
  if (u8.length < 12 + 16) throw new Error('encrypted payload too short');
  const pt = await subtle.decrypt({ name: 'AES-GCM', iv: u8.subarray(0, 12) }, key, u8.subarray(12));
  return decoder.decode(pt);
}

/** The WebSocket form of section 3: JSON value → base64 string, and back. */
export async function sealJson(key, value, iv) {
  return toBase64(await encryptBytes(key, JSON.stringify(value), iv));
}

export async function openJson(key, data) {
  if (typeof data !== 'string') throw new Error('encrypted payload is not a string');
  return JSON.parse(await decryptBytes(key, fromBase64(data)));
}

// ---------------------------------------------------------------------------
// Small helpers
// ---------------------------------------------------------------------------

function uuid() {
  if (globalThis.crypto.randomUUID) return globalThis.crypto.randomUUID();
  // randomUUID needs a secure context; pages served over plain http from a
  // LAN address are not one.
  const b = globalThis.crypto.getRandomValues(new Uint8Array(16));
  b[6] = (b[6] & 0x0f) | 0x40;
  b[8] = (b[8] & 0x3f) | 0x80;
  const h = toHex(b);
  return `${h.slice(0, 8)}-${h.slice(8, 12)}-${h.slice(12, 16)}-${h.slice(16, 20)}-${h.slice(20)}`;
}

function emitEvent(target, type, detail) {
  target.dispatchEvent(new CustomEvent(type, { detail }));
}

function valid(msg) {
  return msg && typeof msg === 'object' && typeof msg.type === 'string' && typeof msg.id === 'string';
}

/** Puts the codecs named in `prefer` (mime types, e.g. 'video/VP8') first. */
function preferCodecs(transceiver, kind, prefer) {
  if (!transceiver.setCodecPreferences || !globalThis.RTCRtpReceiver?.getCapabilities) return;
  const caps = RTCRtpReceiver.getCapabilities(kind);
  if (!caps) return;
  const rank = (c) => {
    const i = prefer.findIndex((m) => m.toLowerCase() === c.mimeType.toLowerCase());
    return i < 0 ? prefer.length : i;
  };
  const codecs = caps.codecs.slice().sort((a, b) => rank(a) - rank(b));
  try {
    transceiver.setCodecPreferences(codecs);
  } catch (e) {
    // A hint only.
  }
}

// One peer connection plus what the protocol keeps beside it.
class Peer {
  constructor(id, pc) {
    this.id = id;
    this.pc = pc;
    this.channel = null;
    this.queue = []; // candidates waiting for the remote description
    this.gathered = false; // gathering ended once (later candidates: a network change)
    this.outbox = []; // data waiting for the channel to open (sender side)
    this.state = {};
    this.connected = false;
    this.closed = false;
    this.timer = null;
  }

  async addCandidate(candidate) {
    if (!this.pc.remoteDescription) {
      this.queue.push(candidate);
      return;
    }
    await this.pc.addIceCandidate(candidate);
  }

  async flushCandidates() {
    const queued = this.queue.splice(0);
    for (const c of queued) await this.pc.addIceCandidate(c);
  }
}

function sanitizeCandidate(c) {
  if (!c || typeof c !== 'object' || typeof c.candidate !== 'string') return null;
  // An empty candidate string is an end-of-candidates marker.
  const out = { candidate: c.candidate };
  if (c.sdpMid !== undefined && c.sdpMid !== null) out.sdpMid = String(c.sdpMid);
  if (typeof c.sdpMLineIndex === 'number') out.sdpMLineIndex = c.sdpMLineIndex;
  if (typeof c.usernameFragment === 'string') out.usernameFragment = c.usernameFragment;
  if (out.sdpMid === undefined && out.sdpMLineIndex === undefined) out.sdpMLineIndex = 0;
  return out;
}

class Base extends EventTarget {
  constructor({ driver, iceServers = [], connectionTimeout = 30 } = {}) {
    super();
    if (!driver) throw new Error('a signaling driver is required');
    this.driver = driver;
    this.iceServers = iceServers;
    this.connectionTimeout = connectionTimeout;
    this.peers = new Map();
    this.id = uuid();
    this.room = 'default';
    this.running = false;
    this.handler = (msg) => {
      if (!this.running || !valid(msg) || msg.id === this.id) return;
      this.handle(msg).catch((error) => emitEvent(this, 'error', { id: msg.id, error }));
    };
  }

  newPeer(id) {
    // The driver's are TURN credentials the relay handed out (`p2p signal
    // --turn-secret`); they join the ones given here.
    const issued = Array.isArray(this.driver.iceServers) ? this.driver.iceServers : [];
    const pc = new RTCPeerConnection({ iceServers: [...this.iceServers, ...issued] });
    const peer = new Peer(id, pc);
    this.peers.set(id, peer);
    pc.addEventListener('icecandidate', (e) => {
      if (peer.closed) return;
      if (!e.candidate || !e.candidate.candidate) {
        peer.gathered = true; // the end of this round of gathering
        return;
      }
      // A candidate after gathering ended, on a connection that was up:
      // the browser gathers again because the host's network changed (an
      // address came or went). Found at once, not after the path has been
      // quiet for seconds.
      if (peer.gathered && peer.connected) this.networkChanged(peer);
      this.driver.emit(this.peerNamespace(id), { type: 'candidate', id: this.id, candidate: e.candidate.toJSON() });
    });
    pc.addEventListener('connectionstatechange', () => {
      if (peer.closed) return;
      const s = pc.connectionState;
      if (s === 'connected' && !peer.connected) {
        peer.connected = true;
        clearTimeout(peer.timer);
        this.onConnect(peer);
      } else if (s === 'failed' || s === 'closed') {
        this.closePeer(peer, { notify: true, error: new Error(`connection ${s}`) });
      }
    });
    peer.timer = setTimeout(() => {
      if (!peer.connected && !peer.closed) {
        this.closePeer(peer, { notify: true, error: new Error('connection timeout') });
      }
    }, this.connectionTimeout * 1000);
    return peer;
  }

  onConnect(peer) {
    emitEvent(this, 'connect', { id: peer.id, peer: peer.pc, state: peer.state });
  }

  /** The host's network changed under `peer`'s connection: the relay
   * connection may have left from an address that is gone, and is made
   * again first (what is sent meanwhile waits for it). */
  networkChanged(peer) {
    return this.driver.reconnectNow?.() === true;
  }

  closePeer(peer, { notify = false, error } = {}) {
    if (peer.closed) return;
    peer.closed = true;
    clearTimeout(peer.timer);
    clearInterval(peer.restartTimer);
    clearInterval(peer.repairTimer);
    clearInterval(peer.pathTimer);
    if (notify) this.sendDispose(peer);
    try {
      peer.channel?.close();
    } catch (e) {
      /* already closed */
    }
    try {
      peer.pc.close();
    } catch (e) {
      /* already closed */
    }
    if (this.peers.get(peer.id) === peer) this.peers.delete(peer.id);
    emitEvent(this, 'dispose', { id: peer.id, peer: peer.pc, state: peer.state, error });
    this.afterDispose();
  }

  afterDispose() {}

  setupChannel(peer, channel) {
    peer.channel = channel;
    channel.binaryType = 'arraybuffer';
    channel.addEventListener('open', () => {
      const pending = peer.outbox.splice(0);
      for (const m of pending) channel.send(m);
      emitEvent(this, 'channel', { id: peer.id, channel, state: peer.state });
    });
    channel.addEventListener('message', (e) => {
      emitEvent(this, 'message', { id: peer.id, message: e.data, state: peer.state });
    });
    channel.addEventListener('close', () => {
      if (peer.channel === channel) peer.channel = null;
    });
  }

  async handleCandidate(msg) {
    const peer = this.peers.get(msg.id);
    const c = sanitizeCandidate(msg.candidate);
    if (!peer || !c || !c.candidate) return;
    try {
      await peer.addCandidate(c);
    } catch (error) {
      // One bad candidate (e.g. a name we cannot resolve) does not end the peer.
      console.warn('p2p: candidate ignored', c.candidate, error);
    }
  }
}

// ---------------------------------------------------------------------------
// Sender
// ---------------------------------------------------------------------------

export class Sender extends Base {
  constructor(options = {}) {
    super(options);
    this.verify = options.verify;
    this.queueSize = options.queueSize ?? 10;
    this.audioBitrate = options.audioBitrate;
    this.videoBitrate = options.videoBitrate;
    this.state = {};
  }

  peerNamespace(rid) {
    return ['receiver', this.room, rid];
  }

  start({ stream = null, room = 'default', state = {}, dataChannel = false } = {}) {
    if (this.running) throw new Error('sender already started');
    this.stream = stream;
    this.room = room;
    this.state = { ...state };
    this.dataChannel = dataChannel || !stream;
    this.running = true;
    this.driver.on(['sender', room], this.handler);
    this.driver.on(['sender', room, this.id], this.handler);
    this.driver.emit(['receiver', room], { type: 'invoke', id: this.id });
  }

  stop() {
    if (!this.running) return;
    for (const peer of [...this.peers.values()]) this.closePeer(peer, { notify: true });
    this.running = false;
    this.driver.off(['sender', this.room], this.handler);
    this.driver.off(['sender', this.room, this.id], this.handler);
  }

  sendDispose(peer) {
    this.driver.emit(this.peerNamespace(peer.id), { type: 'dispose', id: this.id, state: this.state });
  }

  /** Sends `data` to every receiver (or to receiver `id`); queued until channels open. */
  send(data, id) {
    const targets = id ? [this.peers.get(id)].filter(Boolean) : [...this.peers.values()];
    for (const peer of targets) {
      if (peer.channel && peer.channel.readyState === 'open') {
        peer.channel.send(data);
      } else {
        peer.outbox.push(data);
        while (peer.outbox.length > this.queueSize) peer.outbox.shift();
      }
    }
  }

  sync(state, merge = false) {
    this.state = merge ? { ...this.state, ...state } : { ...state };
    for (const peer of this.peers.values()) {
      this.driver.emit(this.peerNamespace(peer.id), { type: 'sync', id: this.id, state: this.state });
    }
  }

  async handle(msg) {
    switch (msg.type) {
      case 'invoke':
        return this.handleInvoke(msg);
      case 'answer': {
        const peer = this.peers.get(msg.id);
        if (!peer || !msg.answer || peer.pc.signalingState !== 'have-local-offer') return;
        await peer.pc.setRemoteDescription(msg.answer);
        await peer.flushCandidates();
        return;
      }
      case 'candidate':
        return this.handleCandidate(msg);
      case 'dispose': {
        const peer = this.peers.get(msg.id);
        if (peer) this.closePeer(peer);
        return;
      }
      default:
    }
  }

  async handleInvoke(msg) {
    const rid = msg.id;
    if (this.peers.has(rid)) return;
    if (this.verify && !(await this.verify(rid, msg.credentials))) return;
    const peer = this.newPeer(rid);
    const pc = peer.pc;
    if (this.stream) {
      for (const track of this.stream.getTracks()) {
        const sender = pc.addTrack(track, this.stream);
        const transceiver = pc.getTransceivers().find((t) => t.sender === sender);
        if (transceiver) {
          preferCodecs(transceiver, track.kind, track.kind === 'video' ? ['video/VP8'] : ['audio/opus']);
        }
        this.applyBitrate(sender, track.kind);
      }
    }
    if (this.dataChannel) {
      this.setupChannel(peer, pc.createDataChannel(rid, { ordered: true }));
    }
    const offer = await pc.createOffer();
    await pc.setLocalDescription(offer);
    if (peer.closed) return;
    this.driver.emit(this.peerNamespace(rid), {
      type: 'offer',
      id: this.id,
      offer: { type: pc.localDescription.type, sdp: pc.localDescription.sdp },
      state: this.state,
    });
  }

  applyBitrate(sender, kind) {
    const kbps = kind === 'video' ? this.videoBitrate : this.audioBitrate;
    if (!kbps || !sender.getParameters) return;
    const params = sender.getParameters();
    if (!params.encodings || params.encodings.length === 0) params.encodings = [{}];
    params.encodings[0].maxBitrate = kbps * 1000;
    sender.setParameters(params).catch(() => {});
  }
}

// ---------------------------------------------------------------------------
// Receiver
// ---------------------------------------------------------------------------

// A live picture through a path that loses packets: the browser asks for
// each lost one again (NACK), but its jitter buffer follows the arrival
// jitter of whole frames and leaves no time for a repair, so every frame
// that lost a packet stalls the picture for a round trip. Through 5 %
// random loss at a 50 ms round trip, a third of the full layer's frames
// lose one: 22 frames a second shown, 4 to 6 freezes in 12 s. While the
// path loses packets, frames are held one repair longer (two round trips
// and a margin, reached in steps); the wait goes once the path has been
// clean a while.
// A connection's path is watched for going quiet (watchPath): media stops
// arriving when the host's network changes under it, and the browser calls
// the path disconnected only seconds later (9 s, measured: a page whose
// address moved to another subnet).
const PATH_CHECK_MS = 250;
const PATH_QUIET_MS = 1000; // nothing for this long, where media flowed: the path is gone
const PATH_FLOWING_BPS = 16000; // what says media (not only keepalives) flowed
const PATH_WINDOW_MS = 1000; // over which the flow before the quiet is judged

/** Tells, from a connection's count of bytes received read now and then,
 * when a path that carried media went quiet. Pure: fed the times (ms) and
 * counts, so it is tested without a browser. */
export class PathQuiet {
  constructor({ quietMs = PATH_QUIET_MS, flowingBps = PATH_FLOWING_BPS, windowMs = PATH_WINDOW_MS } = {}) {
    this.quietMs = quietMs;
    this.flowingBps = flowingBps;
    this.windowMs = windowMs;
    this.rises = []; // [ms, bytes] where the count rose, over the last window
    this.told = false;
  }

  /** The count read at `now`: true (once, until bytes come again) when
   * nothing came for `quietMs` after media flowed. Media flowed if the
   * rises of the window before the last one carried `flowingBps`: judged
   * over a window, not the last read alone, which may hold only the few
   * bytes that came before the path went. */
  read(now, bytes) {
    const last = this.rises[this.rises.length - 1];
    if (!last || bytes < last[1]) {
      this.rises = [[now, bytes]]; // the first read, or a new transport
      this.told = false;
      return false;
    }
    if (bytes > last[1]) {
      this.rises.push([now, bytes]);
      while (this.rises[0][0] < now - this.windowMs) this.rises.shift();
      this.told = false;
      return false;
    }
    if (this.told || now - last[0] < this.quietMs) return false;
    const [since, from] = this.rises[0];
    const span = last[0] - since;
    // Rises a window apart are keepalives: no media.
    if (span < this.windowMs / 2) return false;
    if (((last[1] - from) * 8 * 1000) / span < this.flowingBps) return false;
    this.told = true;
    return true;
  }
}

/** Watches `peer`'s path: once media flowed over it, a second without a
 * byte means the path is gone (the host's network changed, or the sender
 * stalled), and `onQuiet` is called, once until bytes flow again. */
function watchPath(peer, onQuiet) {
  clearInterval(peer.pathTimer);
  const quiet = new PathQuiet();
  peer.pathTimer = setInterval(async () => {
    if (peer.closed) {
      clearInterval(peer.pathTimer);
      return;
    }
    let report;
    try {
      report = await peer.pc.getStats();
    } catch (e) {
      return; // closed meanwhile
    }
    let got = 0;
    for (const r of report.values()) {
      if (r.type === 'transport') got += r.bytesReceived || 0;
    }
    if (quiet.read(performance.now(), got) && peer.connected && !['closed', 'failed'].includes(peer.pc.connectionState)) {
      onQuiet();
    }
  }, PATH_CHECK_MS);
}

const REPAIR_CHECK_MS = 1000;
const REPAIR_LOSS = 0.005; // share of packets lost over a check that asks for the wait
const REPAIR_MARGIN_MS = 40;
const REPAIR_MAX_MS = 400;
const REPAIR_FIRST_MS = 100; // about where the browser's own wait is on such a path
const REPAIR_STEP_MS = 50; // the most the wait rises at a check
const REPAIR_CLEAN_MS = 15000; // loss-free time after which the wait goes
const REPAIR_LATE_PER_S = 0.2; // lost packets a second whose repair may come after the wait
const REPAIR_TRIES_MAX = 3;

/** How long (ms) frames wait for repairs on a path with round trip
 * `rttMs` that loses `lossShare` of its `packetsPerS` packets: long
 * enough for as many tries (a NACK and its resend, a round trip each;
 * a try fails if either is lost) as leave at most REPAIR_LATE_PER_S
 * packets a second unrepaired in time, and a round trip and a margin for
 * the loss to be seen. 1 % loss at 250 packets a second: one try (two
 * round trips); 5 %: two (three round trips; measured, with one the
 * page froze 0.2 s where Chromium, with FEC, froze 0.07). */
export function repairWait(rttMs, lossShare, packetsPerS) {
  const fail = Math.min(0.5, 2 * lossShare);
  const lost = lossShare * packetsPerS;
  let tries = 1;
  while (tries < REPAIR_TRIES_MAX && lost * fail ** tries > REPAIR_LATE_PER_S) tries++;
  return Math.min(REPAIR_MAX_MS, Math.round((tries + 1) * rttMs + REPAIR_MARGIN_MS));
}

/** Holds `receiver`'s frames long enough for a repair while `peer`'s
 * path loses packets (Chromium's `jitterBufferTarget`; elsewhere nothing). */
function waitForRepairs(peer, receiver) {
  if (!receiver || !('jitterBufferTarget' in receiver)) return;
  clearInterval(peer.repairTimer);
  let last = null;
  let lossyAt = -Infinity;
  let lastRtt = null;
  let target = null;
  let share = 0; // of packets lost, smoothed over checks
  let rate = 0; // packets a second
  peer.repairTimer = setInterval(async () => {
    let report;
    try {
      report = await peer.pc.getStats(receiver.track);
    } catch (e) {
      return; // closed meanwhile
    }
    let rtp = null;
    let rtt = null;
    for (const r of report.values()) {
      if (r.type === 'inbound-rtp' && r.kind === 'video') rtp = r;
      if (r.type === 'candidate-pair' && r.nominated && r.state === 'succeeded' && r.currentRoundTripTime !== undefined) {
        rtt = r.currentRoundTripTime * 1000;
      }
    }
    if (!rtp) return;
    const now = performance.now();
    const lost = rtp.packetsLost || 0;
    const got = rtp.packetsReceived || 0;
    // packetsLost counts what is still missing; a packet repaired in time
    // is not lost. NACKs sent say the path drops packets all the same.
    const nacks = rtp.nackCount || 0;
    if (last) {
      const dLost = Math.max(0, lost - last.lost);
      const dGot = Math.max(0, got - last.got);
      const dNacks = Math.max(0, nacks - last.nacks);
      if (dLost + dGot > 0 && dLost / (dLost + dGot) >= REPAIR_LOSS) lossyAt = now;
      if (dNacks >= 2) lossyAt = now;
      if (dGot > 0) {
        share += 0.3 * (Math.max(dLost / (dLost + dGot), dNacks / dGot) - share);
        rate += 0.3 * ((dGot * 1000) / REPAIR_CHECK_MS - rate);
      }
    }
    last = { lost, got, nacks };
    if (rtt !== null) lastRtt = rtt;
    // Each change moves the playout point, and a rise stalls the picture
    // by as much: the wait rises a step a second (a frame shown that much
    // late, not a freeze) and only while the path loses packets, and goes
    // once it has been clean a while. (Following each round-trip reading,
    // or a reading the stats left out, stalled the picture for 0.3 s every
    // few seconds at a 150 ms round trip.)
    let want = target;
    if (now - lossyAt >= REPAIR_CLEAN_MS) {
      want = null;
    } else if (lastRtt !== null) {
      const need = repairWait(lastRtt, share, rate);
      // Up only on a check that found loss: a path that lost once is not
      // made to wait ever longer while it is clean.
      if (target === null) want = Math.min(need, REPAIR_FIRST_MS);
      else if (need > target && lossyAt === now) want = Math.min(need, target + REPAIR_STEP_MS);
    }
    if (want !== target) {
      target = want;
      try {
        receiver.jitterBufferTarget = want;
      } catch (e) {
        /* out of range: leave the browser's own */
      }
    }
  }, REPAIR_CHECK_MS);
}

export class Receiver extends Base {
  constructor(options = {}) {
    super(options);
    this.pingInterval = options.pingInterval ?? 30;
    this.pingAttempts = options.pingAttempts ?? 10;
    this.ignore = new Set(options.ignore || []); // sender ids never to connect to (e.g. our own)
    this.attempts = 0;
    this.pingTimer = null;
  }

  peerNamespace(sid) {
    return ['sender', this.room, sid];
  }

  start({ room = 'default', credentials } = {}) {
    if (this.running) throw new Error('receiver already started');
    this.room = room;
    this.credentials = credentials;
    this.running = true;
    this.driver.on(['receiver', room], this.handler);
    this.driver.on(['receiver', room, this.id], this.handler);
    this.invoke(['sender', room]);
    this.pingTimer = setInterval(() => this.ping(), this.pingInterval * 1000);
  }

  invoke(ns) {
    // `restarts`: we take ICE-restart offers (PROTOCOL.md section 1), so a
    // connection that loses its path is restarted, not replaced.
    const msg = { type: 'invoke', id: this.id, restarts: true };
    if (this.credentials !== undefined) msg.credentials = this.credentials;
    this.driver.emit(ns, msg);
  }

  ping() {
    if (this.peers.size > 0) {
      this.attempts = 0;
      this.invoke(['sender', this.room]);
    } else if (this.attempts < this.pingAttempts) {
      this.attempts++;
      this.invoke(['sender', this.room]);
    }
  }

  stop() {
    if (!this.running) return;
    clearInterval(this.pingTimer);
    for (const peer of [...this.peers.values()]) this.closePeer(peer, { notify: true });
    this.running = false;
    this.driver.off(['receiver', this.room], this.handler);
    this.driver.off(['receiver', this.room, this.id], this.handler);
  }

  sendDispose(peer) {
    this.driver.emit(this.peerNamespace(peer.id), { type: 'dispose', id: this.id });
  }

  afterDispose() {
    if (this.peers.size === 0) this.attempts = 0;
  }

  /** Sends data back to sender `id` over its channel (or to all senders). */
  send(data, id) {
    const targets = id ? [this.peers.get(id)].filter(Boolean) : [...this.peers.values()];
    for (const peer of targets) {
      if (peer.channel && peer.channel.readyState === 'open') peer.channel.send(data);
    }
  }

  async handle(msg) {
    if (this.ignore.has(msg.id)) return;
    switch (msg.type) {
      case 'invoke':
        if (!this.peers.has(msg.id)) this.invoke(this.peerNamespace(msg.id));
        return;
      case 'offer':
        return this.handleOffer(msg);
      case 'restart':
        return this.handleRestart(msg);
      case 'candidate':
        return this.handleCandidate(msg);
      case 'sync': {
        const peer = this.peers.get(msg.id);
        if (!peer) return;
        peer.state = msg.state && typeof msg.state === 'object' ? msg.state : {};
        emitEvent(this, 'sync', { id: msg.id, state: peer.state });
        return;
      }
      case 'dispose': {
        const peer = this.peers.get(msg.id);
        if (!peer) return;
        if (msg.state && typeof msg.state === 'object') peer.state = msg.state;
        this.closePeer(peer);
        return;
      }
      default:
    }
  }

  /** The sender restarts ICE on a connection that lost its path: the same
   * connection, its tracks and channel, carry on over the new one. */
  async handleRestart(msg) {
    const peer = this.peers.get(msg.id);
    if (!peer || peer.closed || !msg.offer || typeof msg.offer.sdp !== 'string') return;
    peer.restarts = true;
    const pc = peer.pc;
    // The restart gathers anew: its candidates are no network change.
    peer.gathered = false;
    await pc.setRemoteDescription({ type: 'offer', sdp: msg.offer.sdp });
    const answer = await pc.createAnswer();
    await pc.setLocalDescription(answer);
    if (peer.closed) return;
    emitEvent(this, 'reconnecting', { id: msg.id, state: peer.state });
    this.driver.emit(this.peerNamespace(msg.id), {
      type: 'answer',
      id: this.id,
      answer: { type: pc.localDescription.type, sdp: pc.localDescription.sdp },
    });
  }

  /** On a network change, a sender that restarts is asked to at once:
   * the path it has may be gone, and the sender cannot see that before
   * ICE's seconds of silence. */
  networkChanged(peer) {
    const remade = super.networkChanged(peer);
    if (peer.restarts) this.askRestart(peer, { again: remade });
  }

  /** Asks sender `peer` to restart ICE (its path went quiet, or the
   * network changed); `again`: also when asked a moment ago (that ask
   * left on a relay connection just replaced, and may be lost with it). */
  askRestart(peer, { again = false } = {}) {
    const now = Date.now();
    if (!again && peer.askedRestart && now - peer.askedRestart < 2000) return;
    peer.askedRestart = now;
    this.driver.emit(this.peerNamespace(peer.id), { type: 'restart', id: this.id });
  }

  async handleOffer(msg) {
    if (!msg.offer || typeof msg.offer.sdp !== 'string') return;
    const sid = msg.id;
    const old = this.peers.get(sid);
    if (old) this.closePeer(old); // the sender started this peer over
    const peer = this.newPeer(sid);
    peer.state = msg.state && typeof msg.state === 'object' ? msg.state : {};
    peer.restarts = msg.restarts === true;
    const pc = peer.pc;
    // A sender that restarts is asked to when the path goes quiet (and
    // again while it stays so); the browser gives the connection up only
    // when ICE fails.
    pc.addEventListener('connectionstatechange', () => {
      if (peer.closed || !peer.restarts) return;
      clearInterval(peer.restartTimer);
      if (pc.connectionState === 'disconnected') {
        // The relay connection may have died with the path (an address
        // that went away): make it again before asking.
        const remade = this.driver.reconnectNow?.() === true;
        this.askRestart(peer, { again: remade });
        peer.restartTimer = setInterval(() => {
          if (peer.closed || pc.connectionState === 'connected') clearInterval(peer.restartTimer);
          else this.askRestart(peer);
        }, 5000);
      } else if (pc.connectionState === 'connected' && peer.askedRestart) {
        emitEvent(this, 'reconnect', { id: sid, state: peer.state });
      }
    });
    // A path gone quiet is found within a second, not when the browser
    // calls it disconnected: as on a network change.
    watchPath(peer, () => {
      if (peer.restarts) this.networkChanged(peer);
    });
    const announced = new Set();
    pc.addEventListener('track', (e) => {
      if (e.track.kind === 'video') waitForRepairs(peer, e.receiver);
      const stream = e.streams[0] || new MediaStream([e.track]);
      if (!e.streams[0]) peer.fallbackStream = stream;
      emitEvent(this, 'track', { id: sid, track: e.track, stream, state: peer.state });
      if (!announced.has(stream.id)) {
        announced.add(stream.id);
        emitEvent(this, 'stream', { id: sid, stream, state: peer.state });
      }
    });
    pc.addEventListener('datachannel', (e) => this.setupChannel(peer, e.channel));
    await pc.setRemoteDescription({ type: 'offer', sdp: msg.offer.sdp });
    await peer.flushCandidates();
    const answer = await pc.createAnswer();
    await pc.setLocalDescription(answer);
    if (peer.closed) return;
    this.driver.emit(this.peerNamespace(sid), {
      type: 'answer',
      id: this.id,
      answer: { type: pc.localDescription.type, sdp: pc.localDescription.sdp },
    });
  }
}

// ---------------------------------------------------------------------------
// Section 2: WebSocket driver for `p2p signal`
// ---------------------------------------------------------------------------

const MAX_BACKLOG = 256; // frames kept while the relay is away; signaling goes stale beyond that

// A relay connection is made anew on a network change at most this often.
const RECONNECT_APART_MS = 500;

/**
 * A driver over one WebSocket: `on`/`off`/`emit` as the library expects.
 * Reconnects with exponential backoff and re-subscribes. Emits events
 * 'status' ({state: 'connecting'|'open'|'closed', error?, attempt}) and
 * 'relay-error' ({error}) for `error` frames, and 'ice-servers' ({iceServers, ttl})
 * when the relay hands out TURN credentials (kept in `driver.iceServers`).
 *
 * With `secret`, namespaces are hashed and payloads encrypted (section 3).
 */
export class WebSocketDriver extends EventTarget {
  constructor(url, { token, secret, minBackoff = 500, maxBackoff = 10000 } = {}) {
    super();
    const u = new URL(url);
    if (token) u.searchParams.set('token', token);
    // Ask for ICE servers with credentials of our own (section 2): a relay
    // with --turn-secret sends them first, others ignore the parameter.
    u.searchParams.set('ice', '1');
    // Our own name on the relay, and the token that keeps it across a
    // reconnect (section 2): peers keep taking our messages then.
    u.searchParams.set('stamp', '1');
    this.url = u.toString();
    this.resume = null;
    this.iceServers = [];
    this.secret = secret || null;
    this.keyPromise = secret ? deriveKey(secret) : null;
    this.minBackoff = minBackoff;
    this.maxBackoff = maxBackoff;
    this.subs = new Map(); // wire ns key → {ns, handlers:Set}
    this.backlog = [];
    this.chain = Promise.resolve(); // keeps outgoing frames in call order across async crypto
    this.inbound = Promise.resolve(); // keeps incoming messages in order across async crypto
    this.attempt = 0;
    this.closed = false;
    this.ws = null;
    this.connect();
  }

  get connected() {
    return !!this.ws && this.ws.readyState === WebSocket.OPEN;
  }

  connect() {
    if (this.closed) return;
    this.status('connecting');
    this.startedAt = Date.now();
    let ws;
    try {
      const u = new URL(this.url);
      if (this.resume) u.searchParams.set('resume', this.resume);
      ws = new WebSocket(u.toString());
    } catch (error) {
      this.status('closed', error);
      this.scheduleReconnect();
      return;
    }
    this.ws = ws;
    ws.addEventListener('open', () => {
      this.attempt = 0;
      for (const { wire } of this.subs.values()) ws.send(JSON.stringify({ op: 'on', ns: wire }));
      const pending = this.backlog.splice(0);
      for (const f of pending) ws.send(f);
      this.status('open');
    });
    ws.addEventListener('message', (e) => this.onFrame(e.data));
    ws.addEventListener('close', (e) => {
      if (this.ws !== ws) return;
      this.ws = null;
      this.status('closed', e.code === 1000 ? null : new Error(`relay connection closed (code ${e.code})`));
      this.scheduleReconnect();
    });
  }

  scheduleReconnect() {
    if (this.closed) return;
    const delay = Math.min(this.maxBackoff, this.minBackoff * 2 ** this.attempt);
    this.attempt++;
    this.reconnectTimer = setTimeout(() => this.connect(), delay * (0.75 + Math.random() * 0.5));
  }

  status(state, error) {
    this.dispatchEvent(new CustomEvent('status', { detail: { state, error, attempt: this.attempt, url: this.url } }));
  }

  /** Makes the relay connection again now (under the same name, with the
   * resume token): a browser does not tell a page that the address its
   * socket left from is gone, and a connection that went quiet is the
   * first sign. True if it did. */
  reconnectNow() {
    // Not one begun this past moment: it is the new one (a change is
    // told several times). One begun earlier may have left from the
    // address that went: the browser can tell of a new address before
    // the old one goes (measured: a page's connection made between the
    // two was dead, and the ask for a restart it carried lost).
    if (this.closed || Date.now() - this.startedAt < RECONNECT_APART_MS) return false;
    const old = this.ws;
    this.ws = null;
    clearTimeout(this.reconnectTimer);
    try {
      old?.close(4000, 'reconnecting');
    } catch (e) {
      /* already closed */
    }
    this.attempt = 0;
    this.connect();
    return true;
  }

  close() {
    this.closed = true;
    clearTimeout(this.reconnectTimer);
    this.ws?.close(1000);
    this.ws = null;
  }

  async wireNs(ns) {
    return this.secret ? [await hashNamespace(ns)] : ns;
  }

  send(frame) {
    const text = JSON.stringify(frame);
    if (this.connected) this.ws.send(text);
    else {
      this.backlog.push(text);
      while (this.backlog.length > MAX_BACKLOG) this.backlog.shift();
    }
  }

  serial(fn) {
    this.chain = this.chain.then(fn).catch((e) => console.warn('p2p driver:', e));
    return this.chain;
  }

  on(ns, handler) {
    return this.serial(async () => {
      const wire = await this.wireNs(ns);
      const key = JSON.stringify(wire);
      let sub = this.subs.get(key);
      if (!sub) {
        sub = { wire, handlers: new Set() };
        this.subs.set(key, sub);
        if (this.connected) this.ws.send(JSON.stringify({ op: 'on', ns: wire }));
        // Otherwise the open handler subscribes.
      }
      sub.handlers.add(handler);
    });
  }

  off(ns, handler) {
    return this.serial(async () => {
      const wire = await this.wireNs(ns);
      const key = JSON.stringify(wire);
      const sub = this.subs.get(key);
      if (!sub) return;
      sub.handlers.delete(handler);
      if (sub.handlers.size === 0) {
        this.subs.delete(key);
        if (this.connected) this.ws.send(JSON.stringify({ op: 'off', ns: wire }));
      }
    });
  }

  emit(ns, data) {
    return this.serial(async () => {
      const wire = await this.wireNs(ns);
      const payload = this.secret ? await sealJson(await this.keyPromise, data) : data;
      this.send({ op: 'emit', ns: wire, data: payload });
    });
  }

  onFrame(text) {
    let frame;
    try {
      frame = JSON.parse(text);
    } catch (e) {
      console.warn('p2p driver: bad frame from relay', text);
      return;
    }
    if (frame.op === 'error') {
      console.warn('p2p relay error:', frame.error);
      this.dispatchEvent(new CustomEvent('relay-error', { detail: { error: frame.error } }));
      return;
    }
    if (frame.op === 'stamp') {
      if (typeof frame.resume === 'string') this.resume = frame.resume;
      return;
    }
    if (frame.op === 'ice' && Array.isArray(frame.iceServers)) {
      this.iceServers = frame.iceServers;
      this.dispatchEvent(new CustomEvent('ice-servers', { detail: { iceServers: frame.iceServers, ttl: frame.ttl } }));
      return;
    }
    if (frame.op !== 'message' || !Array.isArray(frame.ns)) return;
    const sub = this.subs.get(JSON.stringify(frame.ns));
    if (!sub) return;
    this.inbound = this.inbound.then(async () => {
      let data = frame.data;
      if (this.secret) {
        try {
          data = await openJson(await this.keyPromise, data);
        } catch (e) {
          console.warn('p2p driver: dropped a message that failed to decrypt', e);
          return;
        }
      }
      for (const h of [...sub.handlers]) {
        try {
          h(data);
        } catch (e) {
          console.warn('p2p driver: handler failed', e);
        }
      }
    });
  }
}

/** The relay URL a page served by `p2p signal` talks to: its own host. */
export function defaultSignalUrl(location) {
  return `${location.protocol === 'https:' ? 'wss' : 'ws'}://${location.host}/`;
}
