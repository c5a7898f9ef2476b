// The page watching `p2p send` through a stall: the sender is suspended
// (SIGSTOP) for 8 s, as a laptop's network might drop out. The page's ICE
// goes quiet, it asks for a restart, the sender restarts ICE when it runs
// again, and the same connection carries on: the same tile plays again,
// nothing was disposed on either side.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { Session, countFrames } from './harness.mjs';

test('page keeps its connection to p2p send through an 8 s stall', { timeout: 120000 }, async (t) => {
  const s = new Session('restart');
  t.after(() => s.close());
  await s.relay();
  const room = `restart-${process.pid}`;
  const sender = s.p2p('sender', [
    'send', '--signal', s.relayUrl, '--room', room, '--test-source', '--keep-open',
    '--events', 'json',
  ]);
  await s.browserStart();
  const page = await s.page(s.pageUrl(room, { nick: 'watcher' }), 'watcher');
  const tileVideo = '.tile:not(.local):not(.no-media) video';
  const playing = () => page.evaluate((sel) => {
    const v = document.querySelector(sel);
    return !!v && !!v.srcObject && v.srcObject.getVideoTracks().length > 0 && v.readyState >= 2;
  }, tileVideo);
  await s.waitFor(playing, 30000, 'the sender\'s tile to play video');
  // Mark the connection, to tell it from a new one afterwards.
  await page.evaluate(() => {
    const peer = [...window.p2pApp.receiver.peers.values()][0];
    peer.pc.marked = true;
    window.restartEvents = [];
    for (const e of ['reconnecting', 'reconnect', 'dispose']) {
      window.p2pApp.receiver.addEventListener(e, () => window.restartEvents.push(e));
    }
  });

  process.kill(sender.child.pid, 'SIGSTOP');
  await s.waitFor(() => page.evaluate(() => {
    const peer = [...window.p2pApp.receiver.peers.values()][0];
    return peer && peer.pc.connectionState === 'disconnected';
  }), 20000, 'the page to see the path go quiet');
  await new Promise((r) => setTimeout(r, 8000));
  process.kill(sender.child.pid, 'SIGCONT');
  const resumed = Date.now();

  await s.waitFor(() => page.evaluate(() => window.restartEvents.includes('reconnect')), 20000,
    'the page\'s connection to come back');
  const back = Date.now() - resumed;
  const same = await page.evaluate(() => {
    const peers = [...window.p2pApp.receiver.peers.values()];
    return peers.length === 1 && peers[0].pc.marked === true;
  });
  assert.ok(same, `the page's connection was replaced, not restarted${s.report()}`);
  const { frames } = await countFrames(page, tileVideo, 3000);
  assert.ok(frames >= 30, `only ${frames} frames in 3 s after the restart${s.report()}`);
  const events = await page.evaluate(() => window.restartEvents);
  assert.ok(!events.includes('dispose'), `the page disposed the sender: ${events}${s.report()}`);
  assert.ok(sender.events().some((e) => e.event === 'reconnect'), `the sender saw no reconnect${s.report()}`);
  assert.ok(!sender.events().some((e) => e.event === 'dispose'), `the sender gave the page up${s.report()}`);
  console.log(`page connection back ${back} ms after the sender ran again`);
});
