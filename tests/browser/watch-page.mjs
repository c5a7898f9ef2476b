// A viewer for tests that build their own network (tests/it/nat.rs runs it
// inside a network namespace): opens the page at URL in headless Chromium,
// waits for the first sender's video to play, counts its frames for 3 s and
// reads which ICE candidate pair carries it. Prints one JSON line on stdout:
//   {"frames":…, "width":…, "height":…, "local":"relay", "remote":"relay",
//    "issued":1}
// ("issued": ICE servers the relay handed the page), or {"error":…} and
// exits with 1.
//
//   node tests/browser/watch-page.mjs 'http://10.240.0.1:8000/?room=r'
import { Session, countFrames } from './harness.mjs';

const url = process.argv[2];
if (!url) {
  console.error('usage: node watch-page.mjs PAGE_URL');
  process.exit(2);
}

const s = new Session('watch-page');
let result;
try {
  await s.browserStart({ allowHosts: [new URL(url).hostname] });
  const page = await s.page(url, 'viewer');
  const tileVideo = '.tile:not(.local):not(.no-media) video';
  await s.waitFor(() => page.evaluate((sel) => {
    const v = document.querySelector(sel);
    return !!v && !!v.srcObject && v.srcObject.getVideoTracks().length > 0 && v.readyState >= 2;
  }, tileVideo), 45000, 'the sender\'s tile to play video');
  const { frames, width, height } = await countFrames(page, tileVideo, 3000);
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
  result = { frames, width, height, ...path };
} catch (e) {
  result = { error: `${e.message}` };
}
await s.close();
console.log(JSON.stringify(result));
process.exit(result.error ? 1 : 0);
