// A viewer for tests that build their own network (tests/it/nat.rs and
// tests/it/bandwidth.rs run it inside a network namespace): opens the page
// at URL in headless Chromium, waits for the first sender's video to play,
// lets it run SETTLE ms, counts its frames for WATCH ms (3 s by default)
// and reads which ICE candidate pair carries it and how many bytes of
// video came meanwhile. Prints one JSON line on stdout:
//   {"frames":…, "maxGapMs":…, "width":…, "height":…, "videoBps":…,
//    "firstFrameMs":…, "packetsLost":…, "packetsReceived":…,
//    "local":"relay", "remote":"relay", "issued":1, …}
// (and Chromium's own receive counters over the visit: "nacks", "plis",
// "firs", "freezes", "freezeMs", "framesDropped", "keyFrames",
// "retransmitted", "jitterMs" (mean jitter-buffer delay); "maxGapEndMs":
// when, in the watched window, the longest gap ended; "steps": the first
// peer connections' steps, [name, ms from navigation], "wait-MS" when
// the page changes its wait for repairs, "ws…" for its relay connections
// and "ask-restart" when it asks a sender to restart ICE)
// ("firstFrameMs": from the page's navigation to its first video frame
// shown; "packetsLost"/"packetsReceived": video RTP over the whole visit,
// as Chromium counts them; "issued": ICE servers the relay handed the
// page), or {"error":…} and exits with 1.
//
//   node tests/browser/watch-page.mjs 'http://10.240.0.1:8000/?room=r' [SETTLE_MS WATCH_MS]
import { Session, countFrames } from './harness.mjs';

const url = process.argv[2];
const settleMs = Number(process.argv[3] || 0);
const watchMs = Number(process.argv[4] || 3000);
if (!url || !(settleMs >= 0) || !(watchMs > 0)) {
  console.error('usage: node watch-page.mjs PAGE_URL [SETTLE_MS WATCH_MS]');
  process.exit(2);
}

// Bytes of video received so far over all the page's connections (the
// room has one sender, but a connection that failed and was made again
// stays in the map beside its successor).
const videoIn = (page) => page.evaluate(async () => {
  const sum = {
    bytes: 0, lost: 0, received: 0, nacks: 0, plis: 0, firs: 0, freezes: 0, freezeMs: 0,
    dropped: 0, keyFrames: 0, retransmitted: 0, jitterDelay: 0, jitterEmitted: 0,
  };
  for (const peer of window.p2pApp.receiver.peers.values()) {
    (await peer.pc.getStats()).forEach((r) => {
      if (r.type === 'inbound-rtp' && r.kind === 'video') {
        sum.bytes += r.bytesReceived;
        sum.lost += r.packetsLost || 0;
        sum.received += r.packetsReceived || 0;
        sum.nacks += r.nackCount || 0;
        sum.plis += r.pliCount || 0;
        sum.firs += r.firCount || 0;
        sum.freezes += r.freezeCount || 0;
        sum.freezeMs += (r.totalFreezesDuration || 0) * 1000;
        sum.dropped += r.framesDropped || 0;
        sum.keyFrames += r.keyFramesDecoded || 0;
        sum.retransmitted += r.retransmittedPacketsReceived || 0;
        sum.jitterDelay += r.jitterBufferDelay || 0;
        sum.jitterEmitted += r.jitterBufferEmittedCount || 0;
      }
    });
  }
  return sum;
});
const videoBytes = async (page) => (await videoIn(page)).bytes;

const s = new Session('watch-page');
let result;
try {
  await s.browserStart({ allowHosts: [new URL(url).hostname] });
  // When each step of the first connection happened, from navigation: to
  // tell the page's own start from the network's and the sender's.
  await s.context.addInitScript(() => {
    const steps = [];
    window.__steps = steps;
    const mark = (name) => steps.length < 60 && steps.push([name, Math.round(performance.now())]);
    // The page's wait for repairs (web/p2p.js), each time it changes.
    const wait = Object.getOwnPropertyDescriptor(RTCRtpReceiver.prototype, 'jitterBufferTarget');
    if (wait && wait.set) {
      Object.defineProperty(RTCRtpReceiver.prototype, 'jitterBufferTarget', {
        ...wait,
        set(ms) {
          mark(`wait-${ms}`);
          wait.set.call(this, ms);
        },
      });
    }
    // The page's relay connections, and its asks for an ICE restart.
    const NativeSocket = window.WebSocket;
    window.WebSocket = class extends NativeSocket {
      constructor(...args) {
        super(...args);
        mark('ws');
        this.addEventListener('open', () => mark('ws-open'));
        this.addEventListener('close', (e) => mark(`ws-close-${e.code}`));
      }

      send(data) {
        if (typeof data === 'string' && data.includes('"type":"restart"')) mark('ask-restart');
        return super.send(data);
      }
    };
    const Native = window.RTCPeerConnection;
    window.RTCPeerConnection = class extends Native {
      constructor(...args) {
        super(...args);
        mark('pc');
        this.addEventListener('iceconnectionstatechange', () => mark(`ice-${this.iceConnectionState}`));
        this.addEventListener('connectionstatechange', () => mark(`pc-${this.connectionState}`));
        this.addEventListener('track', (e) => mark(`track-${e.track.kind}`));
      }

      setRemoteDescription(d) {
        mark(`remote-${d && d.type}`);
        return super.setRemoteDescription(d);
      }

      setLocalDescription(d) {
        mark(`local-${d ? d.type : 'auto'}`);
        return super.setLocalDescription(d);
      }
    };
  });
  const page = await s.page(url, 'viewer');
  const tileVideo = '.tile:not(.local):not(.no-media) video';
  // Watched from inside the page, once per animation frame, so the time
  // of the first picture is known to a frame.
  const firstFrameMs = await page.evaluate((sel) => new Promise((resolve) => {
    const deadline = performance.now() + 45000;
    const look = () => {
      const v = document.querySelector(sel);
      if (v && v.srcObject && v.srcObject.getVideoTracks().length > 0 && v.readyState >= 2) {
        resolve(performance.now());
      } else if (performance.now() > deadline) {
        resolve(null);
      } else {
        requestAnimationFrame(look);
      }
    };
    look();
  }), tileVideo);
  if (firstFrameMs === null) throw new Error('timed out after 45000 ms waiting for the sender\'s tile to play video');
  await new Promise((r) => setTimeout(r, settleMs));
  const before = await videoBytes(page);
  const { frames, maxGapMs, maxGapEndMs, width, height } = await countFrames(page, tileVideo, watchMs);
  const videoBps = ((await videoBytes(page)) - before) * 8 / (watchMs / 1000);
  const path = await page.evaluate(async () => {
    const app = window.p2pApp;
    const peer = [...app.receiver.peers.values()][0];
    const stats = await peer.pc.getStats();
    let pair = null;
    stats.forEach((r) => {
      if (r.type === 'transport' && r.selectedCandidatePairId) pair = stats.get(r.selectedCandidatePairId);
    });
    if (!pair) {
      stats.forEach((r) => {
        if (r.type === 'candidate-pair' && r.nominated && r.state === 'succeeded') pair = r;
      });
    }
    const type = (id) => (id && stats.get(id) ? stats.get(id).candidateType : null);
    return {
      local: type(pair?.localCandidateId),
      remote: type(pair?.remoteCandidateId),
      issued: (app.driver.iceServers || []).length,
    };
  });
  const v = await videoIn(page);
  result = {
    frames, maxGapMs: Math.round(maxGapMs), maxGapEndMs: Math.round(maxGapEndMs), width, height,
    videoBps: Math.round(videoBps), firstFrameMs: Math.round(firstFrameMs),
    packetsLost: v.lost, packetsReceived: v.received, nacks: v.nacks, plis: v.plis, firs: v.firs,
    freezes: v.freezes, freezeMs: Math.round(v.freezeMs), framesDropped: v.dropped, keyFrames: v.keyFrames,
    retransmitted: v.retransmitted, steps: await page.evaluate(() => window.__steps || []),
    jitterMs: v.jitterEmitted ? Math.round((v.jitterDelay / v.jitterEmitted) * 1000) : null,
    ...path,
  };
} catch (e) {
  result = { error: `${e.message}` };
}
await s.close();
console.log(JSON.stringify(result));
process.exit(result.error ? 1 : 0);
