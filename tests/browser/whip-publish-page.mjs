// A real WHIP publisher (RFC 9725): headless Chromium's fake camera and
// microphone, sendonly audio+video, every HTTP request made by the page's
// own fetch(). Publishes to WHIP_URL, keeps publishing for --seconds S (or
// until SIGINT/SIGTERM to this process), then DELETEs the resource.
//
//   node tests/browser/whip-publish-page.mjs WHIP_URL [--full|--trickle]
//       [--token T] [--seconds S] [--codec vp8|h264 [--codec-only]] [--same-origin]
//
// --full (default): wait for ICE gathering to complete and POST the offer
//   with all candidates.
// --trickle: POST the offer at once (no candidates), then PATCH each
//   candidate as application/trickle-ice-sdpfrag (RFC 8840: a=ice-ufrag,
//   a=ice-pwd, the m= line, a=mid, a=candidate…; the last one ends with
//   a=end-of-candidates), with If-Match: the 201's ETag when the page can
//   read it (CORS: the server must list ETag in Access-Control-Expose-Headers).
// --codec: put that video codec first (setCodecPreferences); with
//   --codec-only, offer no other video codec (to see a server reject it).
// --same-origin: run the page on WHIP_URL's origin (no CORS involved);
//   by default the page comes from a node server on another 127.0.0.1 port.
//
// Prints JSON lines on stdout:
//   {"event":"created","status":201,"location":"http://…","etag":"\"…\""|null,
//    "acceptPatch":…,"answerCandidates":["udp 127.0.0.2 40000 host",…],
//    "rejected":["video"]}   (m= lines with port 0 in the answer)
//   {"event":"patched","status":204,"candidates":N,"end":false}   (--trickle)
//   {"event":"connected"}
//   {"event":"done","framesSent":…,"videoCodec":"video/VP8","seconds":…,"deleted":200}
// A non-2xx POST prints {"error":"…","status":N,"body":"…"} and exits 1;
// any other failure prints {"error":"…"} (details on stderr) and exits 1.
// FAKE_VIDEO=file.y4m makes the fake camera play that file; WHIP_SHOW_SDP=1
// copies the offer sent and the answer received to stderr.
import http from 'node:http';
import { Session } from './harness.mjs';

const usage = () => {
  console.error('usage: node whip-publish-page.mjs WHIP_URL [--full|--trickle] [--token T] [--seconds S] ' +
    '[--codec vp8|h264 [--codec-only]] [--same-origin]');
  process.exit(2);
};
const args = process.argv.slice(2);
const opts = { url: null, mode: 'full', token: null, seconds: null, codec: null, codecOnly: false, sameOrigin: false };
for (let i = 0; i < args.length; i++) {
  const a = args[i];
  if (a === '--full' || a === '--trickle') opts.mode = a.slice(2);
  else if (a === '--token') opts.token = args[++i];
  else if (a === '--seconds') opts.seconds = Number(args[++i]);
  else if (a === '--codec') opts.codec = (args[++i] || '').toLowerCase();
  else if (a === '--codec-only') opts.codecOnly = true;
  else if (a === '--same-origin') opts.sameOrigin = true;
  else if (!a.startsWith('--') && !opts.url) opts.url = a;
  else usage();
}
if (!/^https?:\/\//.test(opts.url || '') || (opts.seconds !== null && !(opts.seconds > 0)) ||
  (opts.token === undefined) || (opts.codecOnly && !opts.codec)) usage();

const out = (obj) => process.stdout.write(`${JSON.stringify(obj)}\n`);

// SIGINT/SIGTERM end the publishing (then DELETE), as a user's Ctrl-C would.
let stopRequested = false;
let wakeUp = () => {};
const onSignal = () => { stopRequested = true; wakeUp(); };

// A blank page on another loopback port, so the page's fetches are cross-origin.
let server = null;
let pageUrl;
if (opts.sameOrigin) {
  // Never fetched from the server: the browser is handed a blank page for it.
  pageUrl = `${new URL(opts.url).origin}/__whip-publish-page__`;
} else {
  server = http.createServer((req, res) => {
    res.writeHead(200, { 'Content-Type': 'text/html; charset=utf-8' });
    res.end('<!doctype html><meta charset="utf-8"><title>whip publish</title>');
  });
  await new Promise((r) => server.listen(0, '127.0.0.1', r));
  pageUrl = `http://127.0.0.1:${server.address().port}/`;
}

// ---- in the page -----------------------------------------------------------

// Sets up the PeerConnection, POSTs the offer, applies the answer and (in
// trickle mode) PATCHes candidates. Reports through window.whipEvent.
async function publishInPage({ url, mode, token, codec, codecOnly }) {
  const emit = (ev) => window.whipEvent(ev);
  const auth = token ? { Authorization: `Bearer ${token}` } : {};
  const stream = await navigator.mediaDevices.getUserMedia({
    audio: true, video: { width: 640, height: 480, frameRate: 30 },
  });
  const pc = new RTCPeerConnection({ iceServers: [], bundlePolicy: 'max-bundle' });
  window.whip = { pc, stream, auth, location: null };
  pc.addTransceiver(stream.getAudioTracks()[0], { direction: 'sendonly', streams: [stream] });
  const video = pc.addTransceiver(stream.getVideoTracks()[0], { direction: 'sendonly', streams: [stream] });
  if (codec) {
    const all = RTCRtpSender.getCapabilities('video').codecs;
    const want = all.filter((c) => c.mimeType.toLowerCase() === `video/${codec}`);
    if (!want.length) throw new Error(`this Chromium cannot send ${codec}`);
    // H.264: constrained baseline, packetization-mode=1 first, as p2p sends it.
    const rank = (c) => ((c.sdpFmtpLine || '').includes('42e01f') ? 0 : 1) +
      ((c.sdpFmtpLine || '').includes('packetization-mode=1') ? 0 : 2);
    want.sort((x, y) => rank(x) - rank(y));
    video.setCodecPreferences(codecOnly ? want : [...want, ...all.filter((c) => !want.includes(c))]);
  }
  pc.onconnectionstatechange = () => {
    if (pc.connectionState === 'connected' || pc.connectionState === 'failed') emit({ event: pc.connectionState });
  };

  // Candidates gathered before the 201 wait in `pending`; null = gathering done.
  const pending = [];
  let ended = false;
  let flush = null;
  pc.onicecandidate = (e) => {
    if (e.candidate && !e.candidate.candidate) return; // end of one generation
    if (e.candidate) pending.push(e.candidate); else ended = true;
    if (flush) flush();
  };
  const gathered = new Promise((resolve) => {
    if (pc.iceGatheringState === 'complete') resolve();
    pc.addEventListener('icegatheringstatechange', () => {
      if (pc.iceGatheringState === 'complete') resolve();
    });
  });

  const offer = await pc.createOffer();
  await pc.setLocalDescription(offer);
  let sdp = offer.sdp;
  if (mode === 'full') {
    await Promise.race([gathered, new Promise((r) => setTimeout(r, 10000))]);
    sdp = pc.localDescription.sdp;
  }

  let res;
  try {
    res = await fetch(url, { method: 'POST', headers: { 'Content-Type': 'application/sdp', ...auth }, body: sdp });
  } catch (e) {
    return { error: `POST ${url} failed: ${e.message}` };
  }
  const body = await res.text();
  window.whip.sdp = { offer: sdp, answer: body };
  if (!res.ok) return { error: `POST ${url} returned ${res.status}`, status: res.status, body };
  const loc = res.headers.get('Location');
  if (!loc) return { error: 'the 201 has no Location (or it is not exposed to the page)', status: res.status, body };
  const location = new URL(loc, res.url || url).href;
  const etag = res.headers.get('ETag');
  window.whip.location = location;
  const answerCandidates = [...new Set(body.split(/\r?\n/).filter((l) => l.startsWith('a=candidate:'))
    .map((l) => { const f = l.split(' '); return `${f[2].toLowerCase()} ${f[4]} ${f[5]} ${f[7]}`; }))];
  const rejected = body.split(/\r?\n/).filter((l) => /^m=\S+ 0 /.test(l)).map((l) => l.slice(2).split(' ')[0]);
  emit({
    event: 'created', status: res.status, location, etag, acceptPatch: res.headers.get('Accept-Patch'), answerCandidates, rejected,
  });
  await pc.setRemoteDescription({ type: 'answer', sdp: body });

  if (mode === 'trickle') {
    // RFC 8840 fragment: credentials, then per m-section its m= line, mid and candidates.
    const lines = offer.sdp.split('\r\n');
    const ufrag = lines.find((l) => l.startsWith('a=ice-ufrag:'));
    const pwd = lines.find((l) => l.startsWith('a=ice-pwd:'));
    const mlines = {};
    let m = null;
    for (const l of lines) {
      if (l.startsWith('m=')) m = l;
      else if (l.startsWith('a=mid:') && m) mlines[l.slice(6)] = m;
    }
    const firstMid = Object.keys(mlines)[0];
    const fragment = (cands, end) => {
      const byMid = new Map();
      for (const c of cands) {
        const mid = c.sdpMid ?? Object.keys(mlines)[c.sdpMLineIndex ?? 0];
        if (!byMid.has(mid)) byMid.set(mid, []);
        byMid.get(mid).push(c.candidate);
      }
      if (end && !byMid.size) byMid.set(firstMid, []);
      let f = `${ufrag}\r\n${pwd}\r\n`;
      const mids = [...byMid.keys()];
      mids.forEach((mid, i) => {
        f += `${mlines[mid]}\r\na=mid:${mid}\r\n`;
        for (const c of byMid.get(mid)) f += `a=${c}\r\n`;
        if (end && i === mids.length - 1) f += 'a=end-of-candidates\r\n';
      });
      return f;
    };
    // One PATCH at a time, in gathering order.
    let busy = false;
    let endSent = false;
    flush = async () => {
      if (busy || endSent || (!pending.length && !ended)) return;
      busy = true;
      const cands = pending.splice(0);
      const end = ended;
      const headers = { 'Content-Type': 'application/trickle-ice-sdpfrag', ...auth };
      if (etag) headers['If-Match'] = etag;
      let status = null;
      try {
        status = (await fetch(location, { method: 'PATCH', headers, body: fragment(cands, end) })).status;
      } catch (e) {
        status = `failed: ${e.message}`;
      }
      emit({ event: 'patched', status, candidates: cands.length, end });
      endSent = end;
      busy = false;
      flush();
    };
    flush();
  }
  return { ok: true };
}

// Video sent so far, and its codec.
async function statsInPage() {
  const stats = await window.whip.pc.getStats();
  const out = { framesSent: 0, videoCodec: null };
  stats.forEach((r) => {
    if (r.type === 'outbound-rtp' && r.kind === 'video') {
      out.framesSent += r.framesSent || 0;
      if (r.codecId && stats.get(r.codecId)) out.videoCodec = stats.get(r.codecId).mimeType;
    }
  });
  return out;
}

async function deleteInPage() {
  const { location, auth, pc, stream } = window.whip;
  let status = null;
  if (location) {
    try {
      status = (await fetch(location, { method: 'DELETE', headers: auth })).status;
    } catch (e) {
      status = `failed: ${e.message}`;
    }
  }
  pc.close();
  stream.getTracks().forEach((t) => t.stop());
  return status;
}

// ---- driver ----------------------------------------------------------------

const s = new Session('whip-publish');
let exitCode = 0;
let page = null;
let published = false;
try {
  await s.browserStart({ allowHosts: [new URL(opts.url).hostname] });
  // playwright closes the browser on SIGINT/SIGTERM by itself; we need it for the DELETE.
  for (const sig of ['SIGINT', 'SIGTERM', 'SIGHUP']) process.removeAllListeners(sig);
  process.on('SIGINT', onSignal);
  process.on('SIGTERM', onSignal);
  if (opts.sameOrigin) {
    await s.context.route(pageUrl, (route) => route.fulfill({
      status: 200, contentType: 'text/html', body: '<!doctype html><title>whip publish</title>',
    }));
  }
  page = await s.page(pageUrl, 'whip-publish');
  let connected = false;
  await page.exposeFunction('whipEvent', (ev) => {
    if (ev.event === 'connected') connected = true;
    out(ev);
  });
  const r = await page.evaluate(publishInPage, {
    url: opts.url, mode: opts.mode, token: opts.token, codec: opts.codec, codecOnly: opts.codecOnly,
  });
  if (r.error) {
    out(r);
    exitCode = 1;
  } else {
    published = true;
    if (process.env.WHIP_SHOW_SDP) {
      const { offer, answer } = await page.evaluate(() => window.whip.sdp);
      console.error(`--- offer\n${offer}--- answer\n${answer}`);
    }
    await s.waitFor(() => connected || stopRequested, 20000, 'the PeerConnection to connect');
    const t0 = Date.now();
    await new Promise((resolve) => {
      wakeUp = resolve;
      if (stopRequested) resolve();
      if (opts.seconds !== null) setTimeout(resolve, opts.seconds * 1000);
    });
    const stats = await page.evaluate(statsInPage);
    const deleted = await page.evaluate(deleteInPage);
    published = false;
    out({ event: 'done', ...stats, seconds: Math.round((Date.now() - t0) / 100) / 10, deleted });
  }
} catch (e) {
  const msg = `${e.message}`;
  out({ error: msg.split('\n')[0] });
  console.error(msg.includes('--- browser console:') ? msg : `${msg}${s.report()}`);
  exitCode = 1;
  if (published && page) await page.evaluate(deleteInPage).catch(() => {});
}
await s.close();
server?.close();
process.exit(exitCode);
