// A publisher for tests that build their own network (tests/it/bandwidth.rs
// runs it inside a network namespace): opens the page at URL in headless
// Chromium, publishes its fake camera and microphone, keeps publishing for
// RUN_MS, and reports what Chromium's sender made of the path in the last
// half of that time. Prints one JSON line on stdout:
//   {"sender":"<id>", "estimateBps":…, "videoBps":…, "width":…,
//    "fps":…, "limitation":"bandwidth"}
// (estimateBps: the selected pair's availableOutgoingBitrate, Chromium's
// own bandwidth estimate; videoBps: what its video encoder sent), or
// {"error":…} and exits with 1.
//
//   node tests/browser/publish-page.mjs 'http://10.233.1.1:8000/?room=r' RUN_MS
//
// With FAKE_VIDEO=file.y4m in the environment, the fake camera plays that
// file (looped).
import { Session } from './harness.mjs';

const url = process.argv[2];
const runMs = Number(process.argv[3] || 10000);
if (!url || !(runMs > 0)) {
  console.error('usage: node publish-page.mjs PAGE_URL RUN_MS');
  process.exit(2);
}

// Chromium's view of its first receiver: video sent, and its estimate.
const outbound = (page) => page.evaluate(async () => {
  const peer = [...window.p2pApp.sender.peers.values()][0];
  if (!peer) return null;
  const stats = await peer.pc.getStats();
  const out = { bytes: 0, width: 0, fps: 0, limitation: null, estimateBps: null };
  stats.forEach((r) => {
    if (r.type === 'outbound-rtp' && r.kind === 'video') {
      out.bytes += r.bytesSent;
      out.width = Math.max(out.width, r.frameWidth || 0);
      out.fps = Math.max(out.fps, r.framesPerSecond || 0);
      out.limitation = r.qualityLimitationReason;
    }
    if (r.type === 'transport' && r.selectedCandidatePairId) {
      const pair = stats.get(r.selectedCandidatePairId);
      out.estimateBps = pair?.availableOutgoingBitrate ?? null;
    }
  });
  return out;
});

const s = new Session('publish-page');
let result;
try {
  const host = new URL(url).hostname;
  // getUserMedia needs a secure origin; this one is a test network's.
  await s.browserStart({
    allowHosts: [host], secureOrigins: [new URL(url).origin], fakeVideo: process.env.FAKE_VIDEO || null,
  });
  const page = await s.page(url, 'publisher');
  await page.click('#publish');
  await s.waitFor(() => page.evaluate(() => !!window.p2pApp.stream), 15000, 'the camera to start');
  const sender = await page.evaluate(() => window.p2pApp.sender.id);
  await s.waitFor(async () => (await outbound(page))?.bytes > 0, 30000, 'video to flow to a receiver');
  await new Promise((r) => setTimeout(r, runMs / 2));
  const a = await outbound(page);
  await new Promise((r) => setTimeout(r, runMs / 2));
  const b = await outbound(page);
  result = {
    sender,
    estimateBps: b.estimateBps,
    videoBps: Math.round((b.bytes - a.bytes) * 8 / (runMs / 2000)),
    width: b.width,
    fps: b.fps,
    limitation: b.limitation,
  };
} catch (e) {
  result = { error: `${e.message}` };
}
await s.close();
console.log(JSON.stringify(result));
process.exit(result.error ? 1 : 0);
