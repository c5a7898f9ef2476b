// Figure 1 baseline (issue 7): time to media between two pages of our own
// browser app (web/), in headless Chromium, measured the way bench/run.py
// measures `p2p receive`.
//
//   node bench/chromium_ttm.mjs --p2p target/release/p2p [--runs 10]
//
// Page A loads the app in a room and publishes its fake camera and microphone
// (Chromium's --use-fake-device-for-media-stream), as a user clicking
// "Publish" would. Then, `--runs` times, a fresh tab B loads the app page
// (without joining, so the app starts nothing) and, inside the page, starts
// what `p2p receive` starts: a new WebSocketDriver (its own relay connection)
// and a Receiver from the app's own p2p.js. Times are taken inside page B,
// from just before the driver is created (t0):
//
//   connect   RTCPeerConnection connectionState 'connected' (ICE + DTLS)
//   rtp       first RTP packet of any kind: the first remote track's 'unmute'
//             (Chromium unmutes a remote track on its first packet)
//   rtp_stats first inbound-rtp packetsReceived > 0 seen by getStats polling
//             (every 10 ms from 'connected'; a cross-check of `rtp`)
//   decoded   first video frame decoded: the earliest of the first rendered
//             frame's receiveTime + processingDuration (requestVideoFrameCallback
//             metadata), inbound-rtp framesDecoded > 0 in the same polling,
//             and `rendered`
//   rendered  presentationTime of the first requestVideoFrameCallback of a
//             <video> showing the stream
//
// B's receiver is then stopped and the tab closed; the next run starts once
// page A's sender has dropped that peer. Nothing in web/ is changed: the
// peer connection is reached by wrapping the Receiver instance's newPeer.
//
// Prints one JSON object on stdout: {chromium, runs: [{…ms}], page_load_ms}.
// Needs playwright-core (tests/browser/node_modules) and /usr/bin/chromium.
//
// Across NATs (figure 7), A and B run in different network namespaces, so
// in two processes against a relay started elsewhere (`--signal`):
//   --role publish   page A only: prints {"ready":true} once it publishes,
//                    then runs until SIGTERM
//   --role receive   the measuring tab B only (`--runs` times, 1.5 s apart)

import { parseArgs } from 'node:util';
import path from 'node:path';

const { values: opt } = parseArgs({
  options: {
    p2p: { type: 'string', default: 'target/release/p2p' },
    runs: { type: 'string', default: '10' },
    settle: { type: 'string', default: '2000' }, // ms the publisher runs before the first receiver
    timeout: { type: 'string', default: '30000' },
    signal: { type: 'string', default: '' }, // a relay already running (else one is started)
    room: { type: 'string', default: '' },
    role: { type: 'string', default: 'both' }, // both | publish | receive
  },
});
const publishes = opt.role !== 'receive';
const receives = opt.role !== 'publish';
process.env.P2P_BIN = path.resolve(opt.p2p);
const { Session } = await import('../tests/browser/harness.mjs');

const runs = Number(opt.runs);
const timeoutMs = Number(opt.timeout);
const log = (...a) => console.error('[chromium-ttm]', ...a);
const sleep = (ms) => new Promise((r) => setTimeout(r, ms));

/** In page B: starts a driver + receiver and resolves with the marks (ms from t0). */
async function measureInPage({ signal, room, timeoutMs }) {
  const { WebSocketDriver, Receiver } = await import('/p2p.js');
  const marks = {};
  let t0 = 0;
  const mark = (k, at = performance.now()) => {
    if (!(k in marks)) marks[k] = at - t0;
  };
  let done;
  const finished = new Promise((resolve) => { done = resolve; });
  const timer = setTimeout(() => done('timeout'), timeoutMs);

  const POLL_MS = 10;
  let rendered = false;
  let polled = false;
  const instrument = (pc) => {
    pc.addEventListener('iceconnectionstatechange', () => {
      if (pc.iceConnectionState === 'connected') mark('ice');
    });
    pc.addEventListener('track', (e) => {
      mark('track_event');
      const track = e.track;
      const onUnmute = () => {
        mark('rtp');
        mark(`rtp_${track.kind}`);
      };
      if (!track.muted) onUnmute();
      else track.addEventListener('unmute', onUnmute, { once: true });
      if (track.kind === 'video') {
        const video = document.createElement('video');
        video.muted = true;
        video.autoplay = true;
        video.playsInline = true;
        video.srcObject = e.streams[0] || new MediaStream([track]);
        document.body.append(video);
        video.requestVideoFrameCallback((now, meta) => {
          mark('rendered', meta.presentationTime ?? now);
          // For WebRTC frames Chromium tells when the frame's last packet came
          // (receiveTime) and how long it then took to decode (processingDuration).
          if (meta.receiveTime !== undefined && meta.processingDuration !== undefined) {
            mark('decoded_rvfc', meta.receiveTime + meta.processingDuration * 1000);
          }
          rendered = true;
          if (polled) done('ok');
        });
        video.play().catch(() => {});
      }
    });
    let polling = false;
    const poll = async () => {
      while (pc.connectionState !== 'closed') {
        const stats = await pc.getStats();
        const now = performance.now();
        stats.forEach((r) => {
          if (r.type !== 'inbound-rtp') return;
          if (r.packetsReceived > 0) {
            mark('rtp_stats', now);
            mark(`rtp_stats_${r.kind}`, now);
          }
          if (r.kind === 'video' && r.framesDecoded > 0) mark('decoded_stats', now);
        });
        if ('decoded_stats' in marks) {
          polled = true;
          if (rendered) done('ok');
          return;
        }
        await new Promise((r) => setTimeout(r, POLL_MS));
      }
    };
    pc.addEventListener('connectionstatechange', () => {
      if (pc.connectionState === 'connected') {
        mark('connect');
        if (!polling) {
          polling = true;
          poll().catch((e) => console.warn('stats poll', e));
        }
      }
    });
  };

  t0 = performance.now();
  const driver = new WebSocketDriver(signal);
  driver.addEventListener('status', (e) => {
    if (e.detail.state === 'open') mark('ws_open');
  });
  const receiver = new Receiver({ driver });
  const newPeer = receiver.newPeer.bind(receiver);
  receiver.newPeer = (id) => {
    mark('offer');
    const peer = newPeer(id);
    instrument(peer.pc);
    return peer;
  };
  receiver.start({ room });
  window.benchReceiver = { driver, receiver };
  const outcome = await finished;
  clearTimeout(timer);
  // First decoded frame: the earlier of what the first rendered frame's
  // metadata says and what getStats polling saw (a frame is decoded before it
  // is rendered; the polling is only as fine as its interval).
  marks.decoded = Math.min(marks.decoded_stats ?? Infinity, marks.decoded_rvfc ?? Infinity,
    marks.rendered ?? Infinity);
  return { outcome, marks };
}

const s = new Session('bench-ttm');
let failed = false;
try {
  if (opt.signal) s.relayUrl = opt.signal.replace(/\/$/, '');
  else await s.relay(['-q']);
  const room = opt.room || `ttm-${process.pid}`;
  const page = new URL(s.relayUrl.replace(/^ws/, 'http'));
  await s.browserStart({ allowHosts: [page.hostname], secureOrigins: [page.origin] });
  let pub = null;
  if (publishes) {
    pub = await s.page(s.pageUrl(room, { nick: 'bench-cam' }), 'publisher');
    await pub.click('#publish');
    await s.waitFor(() => pub.evaluate(() => !!window.p2pApp.stream && !!window.p2pApp.sender), 15000,
      'the fake camera to start');
    await sleep(Number(opt.settle));
  }
  if (!receives) {
    console.log(JSON.stringify({ ready: true }));
    await new Promise((resolve) => {
      process.once('SIGTERM', resolve);
      process.once('SIGINT', resolve);
    });
    throw Object.assign(new Error('stopped'), { quiet: true });
  }

  const out = [];
  const loads = [];
  const blank = s.relayUrl.replace(/^ws/, 'http') + '/';
  for (let i = 0; i < runs; i++) {
    const tl = Date.now();
    const page = await s.page(blank, `receiver-${i}`);
    await page.waitForFunction(() => !!window.p2pApp, null, { timeout: 15000 });
    loads.push(Date.now() - tl);
    const r = await page.evaluate(measureInPage, { signal: s.relayUrl, room, timeoutMs });
    if (r.outcome !== 'ok') throw new Error(`run ${i + 1}: ${r.outcome}; marks ${JSON.stringify(r.marks)}${s.report()}`);
    const row = Object.fromEntries(Object.entries(r.marks).map(([k, v]) => [k, Math.round(v * 10) / 10]));
    out.push(row);
    log(`run ${i + 1}: connect ${row.connect} ms, rtp ${row.rtp} ms (stats ${row.rtp_stats}), ` +
      `decoded ${row.decoded} ms, rendered ${row.rendered} ms`);
    await page.evaluate(async () => {
      const { receiver, driver } = window.benchReceiver;
      receiver.stop();
      await driver.chain; // the dispose frame is on the socket before it closes
      driver.close();
    });
    await page.close();
    // The publisher has dropped this receiver before the next one comes
    // (in another process: give it the time it takes here).
    if (pub) {
      await s.waitFor(() => pub.evaluate(() => window.p2pApp.sender.peers.size === 0), 30000,
        'the publisher to drop the receiver');
      await sleep(300);
    } else {
      await sleep(1500);
    }
  }
  if (!pub) {
    console.log(JSON.stringify({ runs: out, page_load_ms: loads }));
    throw Object.assign(new Error('done'), { quiet: true });
  }
  const cdp = await s.context.newCDPSession(pub);
  const { product } = await cdp.send('Browser.getVersion');
  const cam = await pub.evaluate(() => window.p2pApp.stream.getVideoTracks()[0].getSettings());
  console.log(JSON.stringify({
    chromium: product,
    camera: { width: cam.width, height: cam.height, fps: cam.frameRate },
    runs: out,
    page_load_ms: loads,
  }));
} catch (e) {
  if (!e?.quiet) {
    failed = true;
    console.error(e?.stack || String(e));
  }
} finally {
  await s.close();
}
process.exit(failed ? 1 : 0);
