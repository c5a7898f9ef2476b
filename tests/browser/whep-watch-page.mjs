// A real WHEP viewer: headless Chromium watching a WHEP endpoint with
// recvonly audio+video, every HTTP request made by the page's own fetch().
// Watches for --seconds S (or until SIGINT/SIGTERM to this process), then
// DELETEs each session.
//
//   node tests/browser/whep-watch-page.mjs WHEP_URL [--viewers N] [--token T]
//       [--seconds S] [--trickle] [--video-only] [--codec vp8|h264]
//
// --viewers N: N viewers at once in the one page, each its own
//   RTCPeerConnection and session (default 1).
// --trickle: POST the offer at once, without candidates, then PATCH them
//   as application/trickle-ice-sdpfrag (RFC 8840) with If-Match: the ETag.
//   By default the offer is POSTed once gathering is complete.
// --video-only: offer no audio section.
// --codec: take only that video codec (setCodecPreferences), to see an
//   endpoint that sends another refuse the offer.
//
// Prints JSON lines on stdout, each with "viewer": its index:
//   {"event":"created","status":201,"location":"http://…","etag":"\"…\"","postMs":…}
//   {"event":"connected","ms":…}          (ms since the POST was sent)
//   {"event":"first-frame","ms":…,"width":…,"height":…}
//   {"event":"first-audio","ms":…}          (its first samples decoded)
//   {"event":"done","frames":…,"maxGapMs":…,"width":…,"height":…,"videoCodec":"video/VP8",
//    "framesDecoded":…,"audioCodec":"audio/opus","audioSamples":…,"audioEnergy":…,
//    "concealedSamples":…,"deleted":200}
// WHEP_SHOW_SDP=1 copies each offer sent and answer received to stderr.
// A non-2xx POST prints {"viewer":i,"error":"…","status":N,"body":"…"} and exits 1;
// any other failure prints {"error":"…"} (details on stderr) and exits 1.
import http from 'node:http';
import { Session } from './harness.mjs';

const usage = () => {
  console.error('usage: node whep-watch-page.mjs WHEP_URL [--viewers N] [--token T] [--seconds S] ' +
    '[--trickle] [--video-only] [--codec vp8|h264]');
  process.exit(2);
};
const args = process.argv.slice(2);
const opts = {
  url: null, viewers: 1, token: null, seconds: null, trickle: false, videoOnly: false, codec: null,
};
for (let i = 0; i < args.length; i++) {
  const a = args[i];
  if (a === '--viewers') opts.viewers = Number(args[++i]);
  else if (a === '--token') opts.token = args[++i];
  else if (a === '--seconds') opts.seconds = Number(args[++i]);
  else if (a === '--trickle') opts.trickle = true;
  else if (a === '--video-only') opts.videoOnly = true;
  else if (a === '--codec') opts.codec = (args[++i] || '').toLowerCase();
  else if (!a.startsWith('--') && !opts.url) opts.url = a;
  else usage();
}
if (!/^https?:\/\//.test(opts.url || '') || !(opts.viewers >= 1) ||
  (opts.seconds !== null && !(opts.seconds > 0)) || opts.token === undefined) usage();

const out = (obj) => process.stdout.write(`${JSON.stringify(obj)}\n`);

let stopRequested = false;
let wakeUp = () => {};
const onSignal = () => { stopRequested = true; wakeUp(); };

// The page comes from another loopback port: its fetches are cross-origin,
// as a player's page on some other site would be.
const server = http.createServer((req, res) => {
  res.writeHead(200, { 'Content-Type': 'text/html; charset=utf-8' });
  res.end('<!doctype html><meta charset="utf-8"><title>whep watch</title>');
});
await new Promise((r) => server.listen(0, '127.0.0.1', r));
const pageUrl = `http://127.0.0.1:${server.address().port}/`;

// ---- in the page -----------------------------------------------------------

// Viewer `index`: offers recvonly, POSTs, applies the answer, shows what
// arrives in a <video>, and reports through window.whepEvent.
async function watchInPage({ url, index, token, trickle, videoOnly, codec }) {
  const emit = (ev) => window.whepEvent({ viewer: index, ...ev });
  const auth = token ? { Authorization: `Bearer ${token}` } : {};
  const pc = new RTCPeerConnection({ iceServers: [], bundlePolicy: 'max-bundle' });
  const video = document.createElement('video');
  video.id = `v${index}`;
  // Heard, so Chromium measures its level (autoplay is allowed by a flag).
  video.muted = false;
  video.autoplay = true;
  video.playsInline = true;
  document.body.append(video);
  const viewer = { pc, auth, location: null, frames: 0, maxGapMs: 0, last: null };
  (window.viewers ||= [])[index] = viewer;
  if (!videoOnly) pc.addTransceiver('audio', { direction: 'recvonly' });
  const transceiver = pc.addTransceiver('video', { direction: 'recvonly' });
  if (codec) {
    const all = RTCRtpReceiver.getCapabilities('video').codecs;
    const want = all.filter((c) => c.mimeType.toLowerCase() === `video/${codec}`);
    if (!want.length) return { error: `this Chromium cannot receive ${codec}` };
    transceiver.setCodecPreferences(want);
  }
  const stream = new MediaStream();
  // One stream for both tracks, given to the element once: a new
  // srcObject for the second track would restart its load, and a frame
  // callback asked for before could be lost with it.
  pc.ontrack = (e) => {
    stream.addTrack(e.track);
    if (!video.srcObject) video.srcObject = stream;
  };
  let t0 = 0;
  pc.onconnectionstatechange = () => {
    if (pc.connectionState === 'connected' || pc.connectionState === 'failed') {
      emit({ event: pc.connectionState, ms: Math.round(performance.now() - t0) });
    }
  };
  // Every frame shown: the first one's time, then the count and longest gap.
  const step = (now) => {
    if (viewer.last === null) {
      emit({ event: 'first-frame', ms: Math.round(now - t0), width: video.videoWidth, height: video.videoHeight });
    } else {
      viewer.maxGapMs = Math.max(viewer.maxGapMs, now - viewer.last);
    }
    viewer.last = now;
    viewer.frames++;
    video.requestVideoFrameCallback(step);
  };
  video.requestVideoFrameCallback(step);

  const pending = [];
  let ended = false;
  let flush = null;
  pc.onicecandidate = (e) => {
    if (e.candidate && !e.candidate.candidate) return;
    if (e.candidate) pending.push(e.candidate); else ended = true;
    if (flush) flush();
  };
  const gathered = new Promise((resolve) => {
    pc.addEventListener('icegatheringstatechange', () => {
      if (pc.iceGatheringState === 'complete') resolve();
    });
  });
  const offer = await pc.createOffer();
  await pc.setLocalDescription(offer);
  if (!trickle) await Promise.race([gathered, new Promise((r) => setTimeout(r, 10000))]);
  const sdp = trickle ? offer.sdp : pc.localDescription.sdp;

  t0 = performance.now();
  let res;
  try {
    res = await fetch(url, { method: 'POST', headers: { 'Content-Type': 'application/sdp', ...auth }, body: sdp });
  } catch (e) {
    return { error: `POST ${url} failed: ${e.message}` };
  }
  const body = await res.text();
  viewer.sdp = { offer: sdp, answer: body };
  if (!res.ok) return { error: `POST ${url} returned ${res.status}`, status: res.status, body };
  const loc = res.headers.get('Location');
  if (!loc) return { error: 'the 201 has no Location (or it is not exposed to the page)' };
  const location = new URL(loc, res.url || url).href;
  const etag = res.headers.get('ETag');
  viewer.location = location;
  emit({ event: 'created', status: res.status, location, etag, postMs: Math.round(performance.now() - t0) });
  await pc.setRemoteDescription({ type: 'answer', sdp: body });
  if (!videoOnly) {
    // The first audio decoded: samples counted by the stats, looked at
    // every 10 ms.
    (async () => {
      while (pc.connectionState !== 'closed') {
        let samples = 0;
        (await pc.getStats()).forEach((r) => {
          if (r.type === 'inbound-rtp' && r.kind === 'audio') samples += r.totalSamplesReceived || 0;
        });
        if (samples > 0) {
          emit({ event: 'first-audio', ms: Math.round(performance.now() - t0) });
          return;
        }
        await new Promise((r) => setTimeout(r, 10));
      }
    })();
  }

  if (trickle) {
    const lines = offer.sdp.split('\r\n');
    const ufrag = lines.find((l) => l.startsWith('a=ice-ufrag:'));
    const pwd = lines.find((l) => l.startsWith('a=ice-pwd:'));
    const mline = lines.find((l) => l.startsWith('m='));
    const mid = (lines.find((l) => l.startsWith('a=mid:')) || 'a=mid:0').slice(6);
    let busy = false;
    let endSent = false;
    flush = async () => {
      if (busy || endSent || (!pending.length && !ended)) return;
      busy = true;
      const cands = pending.splice(0);
      const end = ended;
      // Bundled: every candidate goes with the first section.
      let f = `${ufrag}\r\n${pwd}\r\n${mline}\r\na=mid:${mid}\r\n`;
      for (const c of cands) f += `a=${c.candidate}\r\n`;
      if (end) f += 'a=end-of-candidates\r\n';
      const headers = { 'Content-Type': 'application/trickle-ice-sdpfrag', ...auth };
      if (etag) headers['If-Match'] = etag;
      const status = await fetch(location, { method: 'PATCH', headers, body: f })
        .then((r) => r.status, (e) => `failed: ${e.message}`);
      emit({ event: 'patched', status, candidates: cands.length, end });
      endSent = end;
      busy = false;
      flush();
    };
    flush();
  }
  return { ok: true };
}

// What viewer `index` received and decoded, then its session deleted.
async function finishInPage(index) {
  const viewer = window.viewers[index];
  const video = document.getElementById(`v${index}`);
  const stats = await viewer.pc.getStats();
  const r = {
    frames: viewer.frames,
    maxGapMs: Math.round(viewer.maxGapMs),
    width: video.videoWidth,
    height: video.videoHeight,
    videoCodec: null,
    framesDecoded: 0,
    audioCodec: null,
    audioSamples: 0,
    audioEnergy: 0,
    concealedSamples: 0,
  };
  stats.forEach((s) => {
    if (s.type !== 'inbound-rtp') return;
    const codec = s.codecId && stats.get(s.codecId) ? stats.get(s.codecId).mimeType : null;
    if (s.kind === 'video') {
      r.videoCodec = codec;
      r.framesDecoded += s.framesDecoded || 0;
    } else if (s.kind === 'audio') {
      r.audioCodec = codec;
      r.audioSamples += s.totalSamplesReceived || 0;
      r.audioEnergy += s.totalAudioEnergy || 0;
      r.concealedSamples += s.concealedSamples || 0;
    }
  });
  let deleted = null;
  if (viewer.location) {
    deleted = await fetch(viewer.location, { method: 'DELETE', headers: viewer.auth })
      .then((x) => x.status, (e) => `failed: ${e.message}`);
    viewer.location = null;
  }
  viewer.pc.close();
  return { ...r, deleted };
}

// ---- driver ----------------------------------------------------------------

const s = new Session('whep-watch');
let exitCode = 0;
let page = null;
const started = [];
try {
  await s.browserStart({ allowHosts: [new URL(opts.url).hostname] });
  for (const sig of ['SIGINT', 'SIGTERM', 'SIGHUP']) process.removeAllListeners(sig);
  process.on('SIGINT', onSignal);
  process.on('SIGTERM', onSignal);
  page = await s.page(pageUrl, 'whep-watch');
  const connected = new Set();
  const framed = new Set();
  await page.exposeFunction('whepEvent', (ev) => {
    if (ev.event === 'connected') connected.add(ev.viewer);
    if (ev.event === 'first-frame') framed.add(ev.viewer);
    out(ev);
  });
  const results = await Promise.all([...Array(opts.viewers).keys()].map((index) => page.evaluate(watchInPage, {
    url: opts.url, index, token: opts.token, trickle: opts.trickle, videoOnly: opts.videoOnly, codec: opts.codec,
  })));
  results.forEach((r, index) => { if (r.ok) started.push(index); });
  if (process.env.WHEP_SHOW_SDP) {
    const sdps = await page.evaluate(() => window.viewers.map((v) => v.sdp));
    for (const { offer, answer } of sdps) console.error(`--- offer\n${offer}--- answer\n${answer}`);
  }
  const failed = results.map((r, viewer) => ({ viewer, ...r })).filter((r) => r.error);
  for (const f of failed) out(f);
  if (failed.length) {
    exitCode = 1;
  } else {
    await s.waitFor(() => connected.size === opts.viewers || stopRequested, 20000, 'every viewer to connect');
    await s.waitFor(() => framed.size === opts.viewers || stopRequested, 20000, 'every viewer\'s first frame');
    await new Promise((resolve) => {
      wakeUp = resolve;
      if (stopRequested) resolve();
      if (opts.seconds !== null) setTimeout(resolve, opts.seconds * 1000);
    });
  }
  while (started.length) {
    const index = started.shift();
    out({ event: 'done', viewer: index, ...await page.evaluate(finishInPage, index) });
  }
} catch (e) {
  const msg = `${e.message}`;
  out({ error: msg.split('\n')[0] });
  console.error(msg.includes('--- browser console:') ? msg : `${msg}${s.report()}`);
  exitCode = 1;
  for (const index of started) await page?.evaluate(finishInPage, index).catch(() => {});
}
await s.close();
server.close();
process.exit(exitCode);
