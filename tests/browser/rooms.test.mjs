// Two pages in one room through our relay: one publishes, one watches; they
// see each other and chat both ways (page-to-page path, no CLI peer).
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { Session, countFrames, chat, chatLines } from './harness.mjs';

test('two pages in a room see each other and chat', { timeout: 120000 }, async (t) => {
  const s = new Session('rooms');
  t.after(() => s.close());
  await s.relay();
  const room = `rooms-${process.pid}`;
  await s.browserStart();
  const alice = await s.page(s.pageUrl(room, { nick: 'alice' }), 'alice');
  await alice.click('#publish');
  await s.waitFor(() => alice.evaluate(() => !!window.p2pApp.stream), 15000, 'alice\'s camera');
  const bob = await s.page(s.pageUrl(room, { nick: 'bob' }), 'bob');

  // Bob sees Alice's video, labelled with her nickname and state.
  const tileVideo = '.tile:not(.local):not(.no-media) video';
  await s.waitFor(() => bob.evaluate((sel) => {
    const v = document.querySelector(sel);
    return !!v && v.readyState >= 2;
  }, tileVideo), 30000, 'bob to play alice\'s video');
  const { frames } = await countFrames(bob, tileVideo, 2000);
  assert.ok(frames >= 20, `bob decoded only ${frames} frames of alice in 2 s${s.report()}`);
  assert.equal(await bob.textContent('.tile:not(.local):not(.no-media) .name'), 'alice');
  assert.equal(await bob.getAttribute('.tile:not(.local):not(.no-media)', 'data-audio'), 'true');

  // Alice sees Bob in the room (a chat participant: he publishes nothing).
  await s.waitFor(() => alice.evaluate(() => [...document.querySelectorAll('.tile.no-media .name')]
    .some((n) => n.textContent === 'bob')), 20000, 'alice to see bob in the room');

  // Alice switches her camera off: Bob's tile follows (sync).
  await alice.click('#toggle-video');
  await s.waitFor(async () => (await bob.getAttribute('.tile:not(.local):not(.no-media)', 'data-video')) === 'false',
    10000, 'bob to see alice\'s camera off');
  await alice.click('#toggle-video');
  await s.waitFor(async () => (await bob.getAttribute('.tile:not(.local):not(.no-media)', 'data-video')) === 'true',
    10000, 'bob to see alice\'s camera on again');

  // Chat both ways.
  await s.waitFor(() => alice.evaluate(() => [...window.p2pApp.sender.peers.values()]
    .some((p) => p.channel?.readyState === 'open')), 20000, 'alice\'s data channel');
  await chat(alice, 'hi bob');
  await s.waitFor(async () => (await chatLines(bob)).some((l) => l.nick === 'alice' && l.text === 'hi bob'),
    10000, 'alice\'s line at bob');
  await s.waitFor(() => bob.evaluate(() => [...window.p2pApp.sender.peers.values()]
    .some((p) => p.channel?.readyState === 'open')), 20000, 'bob\'s data channel');
  await chat(bob, 'hi alice');
  await s.waitFor(async () => (await chatLines(alice)).some((l) => l.nick === 'bob' && l.text === 'hi alice'),
    10000, 'bob\'s line at alice');

  await s.screenshot(alice, 'rooms-publisher');
  // Bob on a phone-sized screen.
  await bob.setViewportSize({ width: 390, height: 844 });
  await s.screenshot(bob, 'rooms-watcher-phone');

  // Alice stops publishing: her tile leaves Bob's page (dispose).
  await alice.click('#stop');
  await s.waitFor(() => bob.evaluate(() => !document.querySelector('.tile:not(.no-media)')), 10000,
    'alice\'s video tile to go away at bob');
});
