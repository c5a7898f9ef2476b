// `p2p send --test-source --data` → the page as a receiver: video decodes,
// audio arrives, a line piped into the sender shows up in the page's chat.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { Session, countFrames, chatLines } from './harness.mjs';

test('page watches p2p send --test-source and shows its chat', { timeout: 120000 }, async (t) => {
  const s = new Session('watch');
  t.after(() => s.close());
  await s.relay();
  const room = `watch-${process.pid}`;
  const sender = s.p2p('sender', [
    'send', '--signal', s.relayUrl, '--room', room, '--test-source', '--data', '--keep-open',
    '--state', '{"nickname":"cli-cam"}', '--events', 'json',
  ]);
  await s.browserStart();
  const page = await s.page(s.pageUrl(room, { nick: 'watcher' }), 'watcher');

  const tileVideo = '.tile:not(.local):not(.no-media) video';
  await s.waitFor(() => page.evaluate((sel) => {
    const v = document.querySelector(sel);
    return !!v && !!v.srcObject && v.srcObject.getVideoTracks().length > 0 && v.readyState >= 2;
  }, tileVideo), 30000, 'the sender\'s tile to play video');

  const { frames, width, height } = await countFrames(page, tileVideo, 3000);
  assert.ok(frames >= 30, `only ${frames} video frames decoded in 3 s (${width}x${height})${s.report()}`);
  assert.ok(width > 0 && height > 0, `video has no size${s.report()}`);

  // Audio: a track, and Opus packets actually decoded into samples.
  await s.waitFor(() => page.evaluate(async () => {
    const peer = [...window.p2pApp.receiver.peers.values()][0];
    if (!peer) return false;
    const stats = await peer.pc.getStats();
    let samples = 0;
    stats.forEach((r) => {
      if (r.type === 'inbound-rtp' && r.kind === 'audio') samples = r.totalSamplesReceived || 0;
    });
    const v = document.querySelector('.tile:not(.local) video');
    return v.srcObject.getAudioTracks().length > 0 && samples > 0;
  }), 15000, 'audio samples from the sender');

  const caption = await page.textContent('.tile:not(.local) .name');
  assert.equal(caption, 'cli-cam', `tile shows the sender's nickname${s.report()}`);

  // A line on the sender's stdin → the page's chat, with the sender's nickname.
  await s.waitFor(() => sender.events().some((e) => e.event === 'channel'), 20000, 'the sender\'s data channel');
  sender.write('hello from the command line\n');
  await s.waitFor(async () => (await chatLines(page)).some((l) => l.text === 'hello from the command line'),
    10000, 'the piped line in the page chat');
  const line = (await chatLines(page)).find((l) => l.text === 'hello from the command line');
  assert.equal(line.nick, 'cli-cam');

  await s.screenshot(page, 'watch');
});
