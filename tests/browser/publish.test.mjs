// The page publishes its (fake) camera and microphone → `p2p receive --record`:
// the recording is VP8 + Opus, long enough, and decodes to nearly every frame
// the camera produced; a chat line typed in the page reaches the receiver's stdout.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { execFileSync } from 'node:child_process';
import { existsSync, statSync } from 'node:fs';
import path from 'node:path';
import { Session, chat } from './harness.mjs';

const RECORD_MS = 6500;

function run(cmd, args) {
  try {
    return execFileSync(cmd, args, { encoding: 'utf8', maxBuffer: 256 * 1024 * 1024, stdio: ['ignore', 'pipe', 'pipe'] });
  } catch (e) {
    throw new Error(`${cmd} ${args.join(' ')} failed: ${e.message}\n${e.stdout}\n${e.stderr}`);
  }
}

test('page publishes camera+mic to p2p receive --record, and chats', { timeout: 120000 }, async (t) => {
  const s = new Session('publish');
  t.after(() => s.close());
  await s.relay();
  const room = `publish-${process.pid}`;
  await s.browserStart();
  const page = await s.page(s.pageUrl(room, { nick: 'browser-cam' }), 'publisher');
  await page.click('#publish');
  await s.waitFor(() => page.evaluate(() => !!window.p2pApp.stream), 15000, 'the camera to start');
  const { sid, fps } = await page.evaluate(() => ({
    sid: window.p2pApp.sender.id,
    fps: window.p2pApp.stream.getVideoTracks()[0].getSettings().frameRate,
  }));
  assert.ok(fps > 0, 'the fake camera reports its frame rate');

  const pattern = path.join(s.tmp, 'rec-{id}.webm');
  const file = path.join(s.tmp, `rec-${sid}.webm`);
  const receiver = s.p2p('receiver', [
    'receive', '--signal', s.relayUrl, '--room', room, '--record', pattern, '--events', 'json',
  ]);
  await s.waitFor(() => receiver.events().some((e) => e.event === 'connect' && JSON.stringify(e).includes(sid)),
    30000, `the receiver to connect to the page's sender ${sid}`);
  const connectedAt = Date.now();

  // Chat: typed in the page → one line on the receiver's stdout.
  await s.waitFor(() => page.evaluate(() => [...window.p2pApp.sender.peers.values()]
    .some((p) => p.channel && p.channel.readyState === 'open')), 20000, 'the page\'s data channel to open');
  await chat(page, 'hello from the browser');
  await s.waitFor(() => receiver.stdout.split('\n').includes('hello from the browser'), 10000,
    'the chat line on the receiver\'s stdout');

  await s.screenshot(page, 'publish');
  const left = RECORD_MS - (Date.now() - connectedAt);
  if (left > 0) await new Promise((r) => setTimeout(r, left));
  const exit = await receiver.stop('SIGINT', 10000);
  assert.ok(exit.signal !== 'SIGKILL', `receiver did not exit on SIGINT${s.report()}`);
  assert.ok(existsSync(file) && statSync(file).size > 0, `no recording at ${file}${s.report()}`);

  const info = run('gst-discoverer-1.0', [file]);
  assert.match(info, /VP8/i, `recording has VP8 video:\n${info}`);
  assert.match(info, /Opus/i, `recording has Opus audio:\n${info}`);
  const d = info.match(/Duration:\s*(\d+):(\d+):(\d+(?:\.\d+)?)/);
  assert.ok(d, `no duration in:\n${info}`);
  const seconds = Number(d[1]) * 3600 + Number(d[2]) * 60 + Number(d[3]);
  assert.ok(seconds >= 5, `recording is only ${seconds} s long:\n${info}`);

  // Decode every frame; fakesink -v prints one "chain" line per buffer.
  const out = run('gst-launch-1.0', ['-v', 'filesrc', `location=${file}`, '!', 'matroskademux', '!', 'vp8dec',
    '!', 'fakesink', 'silent=false']);
  const frames = out.split('\n').filter((l) => l.includes('chain')).length;
  const expected = seconds * fps;
  assert.ok(frames >= 0.9 * expected,
    `decoded ${frames} frames, expected ≥ 90 % of ${expected.toFixed(0)} (${seconds} s at ${fps} fps)${s.report()}`);
  t.diagnostic(`recording: ${seconds.toFixed(2)} s, ${frames} frames decoded at ${fps} fps (${(100 * frames / expected).toFixed(1)} %)`);
});
