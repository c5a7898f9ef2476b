// A Janus VideoRoom subscriber in headless Chromium, with Debian's janus.js
// (package libjs-janus-gateway): waits for a publisher in ROOM, subscribes
// to it, decodes for SECONDS (counted from the first decoded video frame)
// and reads the subscriber's getStats(). Prints one JSON line on stdout:
//   {"videoFrames":…, "videoCodec":"video/VP8", "fps":…, "width":…, "height":…,
//    "audioSamples":…, "audioConcealed":…, "audioCodec":"audio/opus", "seconds":…}
// or {"error":…} (details on stderr) and exits with 1.
//
//   node tests/browser/janus-watch-page.mjs ws://127.0.0.1:8188 1234 5
//
// WS_URL is Janus's WebSocket API (JANUS_WS in the DIR/env that
// scripts/janus-whip.sh writes). Environment: JANUS_JS (default
// /usr/share/javascript/janus-gateway/janus.js), WAIT_PUBLISHER_MS (how long
// to poll listparticipants for a publisher, default 10000).
import http from 'node:http';
import { readFileSync } from 'node:fs';
import { Session } from './harness.mjs';

const [wsUrl, roomArg, secondsArg] = process.argv.slice(2);
const room = Number(roomArg);
const seconds = Number(secondsArg || 5);
if (!/^wss?:\/\//.test(wsUrl || '') || !Number.isInteger(room) || !(seconds > 0)) {
  console.error('usage: node janus-watch-page.mjs WS_URL ROOM SECONDS');
  process.exit(2);
}
const janusJs = process.env.JANUS_JS || '/usr/share/javascript/janus-gateway/janus.js';
const waitPublisherMs = Number(process.env.WAIT_PUBLISHER_MS || 10000);

// The page: janus.js plus a subscriber that the test drives through window.watch.
const pageHtml = `<!doctype html><meta charset="utf-8"><title>janus watch</title>
<video id="v" autoplay muted playsinline></video><audio id="a" autoplay></audio>
<script src="/janus.js"></script>
<script>
const sleep = (ms) => new Promise((r) => setTimeout(r, ms));
window.watch = async ({ server, room, waitPublisherMs }) => {
  // janus.js reads the browser from adapter.js, which is not loaded: say Chrome.
  const adapter = { browserDetails: { browser: 'chrome', version: 120 } };
  await new Promise((r) => Janus.init({
    debug: ['warn', 'error'], dependencies: Janus.useDefaultDependencies({ adapter }), callback: r,
  }));
  const janus = await new Promise((resolve, reject) => {
    const j = new Janus({ server, success: () => resolve(j), error: (e) => reject(new Error('Janus session: ' + e)) });
  });
  window.janusSession = janus;
  const attach = (callbacks) => new Promise((resolve, reject) => janus.attach({
    plugin: 'janus.plugin.videoroom', success: resolve, error: (e) => reject(new Error('attach: ' + e)), ...callbacks,
  }));
  const request = (handle, message) => new Promise((resolve, reject) => handle.send({
    message, success: resolve, error: (e) => reject(new Error(message.request + ': ' + e)),
  }));

  // 1. Handle A: poll the room until someone publishes.
  const a = await attach({});
  const deadline = Date.now() + waitPublisherMs;
  let feed = null;
  for (;;) {
    const r = await request(a, { request: 'listparticipants', room });
    if (r.error) throw new Error('listparticipants: ' + r.error);
    const p = (r.participants || []).find((x) => x.publisher);
    if (p) { feed = p.id; break; }
    if (Date.now() > deadline) throw new Error('no publisher in room ' + room + ' after ' + waitPublisherMs + ' ms');
    await sleep(200);
  }

  // 2. Handle B: subscribe, answer recvonly, start.
  let b = null;
  let failed = null;
  const started = new Promise((resolve, reject) => {
    failed = reject;
    attach({
      onmessage: (msg, jsep) => {
        if (msg.error) return reject(new Error('videoroom: ' + msg.error));
        if (jsep) {
          b.createAnswer({
            jsep,
            tracks: [{ type: 'data' }],
            success: (answer) => b.send({ message: { request: 'start', room }, jsep: answer }),
            error: (e) => reject(new Error('createAnswer: ' + (e.message || e))),
          });
        }
        if (msg.started === 'ok') resolve();
      },
      onremotetrack: (track, mid, on) => {
        if (!on) return;
        const el = document.getElementById(track.kind === 'video' ? 'v' : 'a');
        el.srcObject = new MediaStream([track]);
        el.play().catch(() => {});
      },
    }).then((h) => {
      b = h;
      window.subscriber = h;
      return request(h, { request: 'join', room, ptype: 'subscriber', streams: [{ feed }] });
    }).catch(reject);
  });
  await started;
  return { feed };
};

// Inbound video/audio as getStats() reports it on the subscriber's PeerConnection.
window.readStats = async () => {
  const pc = window.subscriber && window.subscriber.webrtcStuff.pc;
  if (!pc) return null;
  const stats = await pc.getStats();
  const out = { videoFrames: 0, videoCodec: null, fps: null, width: null, height: null,
    audioSamples: 0, audioConcealed: 0, audioCodec: null, ice: pc.iceConnectionState };
  const mime = (r) => (r.codecId && stats.get(r.codecId) ? stats.get(r.codecId).mimeType : null);
  stats.forEach((r) => {
    if (r.type !== 'inbound-rtp') return;
    if (r.kind === 'video') {
      out.videoFrames += r.framesDecoded || 0;
      out.videoCodec = mime(r) || out.videoCodec;
      out.fps = r.framesPerSecond ?? out.fps;
      out.width = r.frameWidth ?? out.width;
      out.height = r.frameHeight ?? out.height;
    } else if (r.kind === 'audio') {
      out.audioSamples += r.totalSamplesReceived || 0;
      out.audioConcealed += r.concealedSamples || 0;
      out.audioCodec = mime(r) || out.audioCodec;
    }
  });
  return out;
};
</script>`;

const server = http.createServer((req, res) => {
  if (req.url === '/janus.js') {
    res.writeHead(200, { 'Content-Type': 'text/javascript' });
    res.end(readFileSync(janusJs));
  } else if (req.url === '/' || req.url.startsWith('/?')) {
    res.writeHead(200, { 'Content-Type': 'text/html; charset=utf-8' });
    res.end(pageHtml);
  } else {
    res.writeHead(404);
    res.end();
  }
});
await new Promise((r) => server.listen(0, '127.0.0.1', r));
const pageUrl = `http://127.0.0.1:${server.address().port}/`;

const s = new Session('janus-watch');
let result;
try {
  readFileSync(janusJs); // fail early and clearly if the package is missing
  await s.browserStart();
  const page = await s.page(pageUrl, 'janus-watch');
  await page.evaluate((args) => window.watch(args), { server: wsUrl, room, waitPublisherMs });
  await s.waitFor(async () => (await page.evaluate(() => window.readStats()))?.videoFrames > 0,
    15000, 'the first decoded video frame');
  const t0 = Date.now();
  const first = await page.evaluate(() => window.readStats());
  await new Promise((r) => setTimeout(r, seconds * 1000));
  const last = await page.evaluate(() => window.readStats());
  const { ice, ...stats } = last;
  result = {
    ...stats,
    videoFrames: last.videoFrames - first.videoFrames + 1,
    audioSamples: last.audioSamples - first.audioSamples,
    audioConcealed: last.audioConcealed - first.audioConcealed,
    seconds: Math.round((Date.now() - t0) / 100) / 10,
  };
  await page.evaluate(() => new Promise((r) => {
    window.janusSession.destroy({ success: r, error: r });
    setTimeout(r, 2000);
  })).catch(() => {});
} catch (e) {
  result = { error: `${e.message}`.split('\n')[0] };
  console.error(e.message.includes('--- browser console:') ? e.message : `${e.message}${s.report()}`);
}
await s.close();
server.close();
console.log(JSON.stringify(result));
process.exit(result.error ? 1 : 0);
