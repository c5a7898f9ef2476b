// What a user sees when things go wrong, and the protected paths: a relay
// that is not there, a camera permission denied, a relay with a token, and
// end-to-end encrypted signaling (?secret=) between two pages.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import net from 'node:net';
import { Session, chat, chatLines } from './harness.mjs';

async function freePort() {
  return new Promise((resolve) => {
    const srv = net.createServer().listen(0, '127.0.0.1', () => {
      const { port } = srv.address();
      srv.close(() => resolve(port));
    });
  });
}

test('an unreachable relay and a denied camera are shown as errors', { timeout: 60000 }, async (t) => {
  const s = new Session('errors');
  t.after(() => s.close());
  await s.relay(); // serves the page; the page is pointed at a dead relay
  await s.browserStart({ fakeUi: '--use-fake-ui-for-media-stream=deny' });
  const dead = `ws://127.0.0.1:${await freePort()}`;
  const base = process.env.P2P_PAGE_BASE ? process.env.P2P_PAGE_BASE.replace(/\/$/, '') : s.relayUrl.replace(/^ws/, 'http');
  const page = await s.page(`${base}/?room=nowhere&nick=lost&signal=${encodeURIComponent(dead)}`, 'lost');
  await s.waitFor(async () => /Cannot reach the relay/.test(await page.textContent('#errors')), 10000,
    'the relay error to show');
  assert.equal(await page.getAttribute('#status', 'data-state'), 'closed');
  await page.click('#publish');
  await s.waitFor(async () => /denied/i.test(await page.textContent('#errors')), 10000, 'the camera error to show');
  await s.screenshot(page, 'errors');
});

test('pages meet through a relay with a token, with encrypted signaling', { timeout: 90000 }, async (t) => {
  const s = new Session('secret');
  t.after(() => s.close());
  const token = 'tok-123';
  await s.relay(['--token', token]);
  await s.browserStart();
  const room = `secret-${process.pid}`;
  const secret = 'correct horse battery staple';
  // Eve has the token but not the secret; she is there first, so she hears
  // everyone's invokes, and must connect to no one.
  const eve = await s.page(s.pageUrl(room, { nick: 'eve', token, secret: 'wrong' }), 'eve');
  await s.waitFor(async () => (await eve.getAttribute('#status', 'data-state')) === 'open', 10000,
    'eve to reach the relay with the token');
  const alice = await s.page(s.pageUrl(room, { nick: 'alice', token, secret }), 'alice');
  await alice.click('#publish');
  const bob = await s.page(s.pageUrl(room, { nick: 'bob', token, secret }), 'bob');
  await s.waitFor(() => bob.evaluate(() => {
    const v = document.querySelector('.tile:not(.local):not(.no-media) video');
    return !!v && v.readyState >= 2;
  }), 30000, 'bob to play alice\'s video over encrypted signaling');
  assert.equal(await bob.getAttribute('#status', 'data-state'), 'open');
  await s.waitFor(() => alice.evaluate(() => [...window.p2pApp.sender.peers.values()]
    .some((p) => p.channel?.readyState === 'open')), 20000, 'alice\'s data channel');
  await chat(alice, 'secret hello');
  await s.waitFor(async () => (await chatLines(bob)).some((l) => l.text === 'secret hello'), 10000,
    'the chat line at bob');
  assert.equal(await eve.evaluate(() => window.p2pApp.receiver.peers.size), 0, 'eve connected without the secret');
  assert.equal(await eve.$('.tile:not(.local):not(.no-media)'), null);
  // Same hashed namespaces, other key: eve's page drops what it cannot decrypt, with a warning.
  assert.ok(s.consoles.some((l) => l.startsWith('[eve] warning') && l.includes('failed to decrypt')),
    `eve's console shows no decryption warning${s.report()}`);
});
