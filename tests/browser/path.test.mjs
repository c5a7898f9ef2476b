// The page's watch on its path (web/p2p.js, PathQuiet): when does a
// connection that carried media count as gone? Pure logic, fed reads of a
// byte count every 250 ms as the page makes them.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { PathQuiet } from '../../web/p2p.js';

const TICK = 250;

/** Feeds `quiet` reads from `from` ms every tick until `to`, the count
 * rising `perTick` bytes a tick until `stopAt` ms (then flat); returns the
 * times it said the path went quiet, and the count reached. */
function run(quiet, { from = 0, to, perTick, stopAt = Infinity, bytes = 0 }) {
  const told = [];
  for (let t = from; t <= to; t += TICK) {
    if (t > from && t <= stopAt) bytes += perTick;
    if (quiet.read(t, bytes)) told.push(t);
  }
  return { told, bytes };
}

test('media that stops is told once, a second after its last bytes', () => {
  const q = new PathQuiet();
  // 250 kbit/s (7.8 KB a tick) for 5 s, then nothing.
  const { told } = run(q, { to: 12000, perTick: 7800, stopAt: 5000 });
  assert.deepEqual(told, [6000]);
});

test('a path that stops just after a read is told too (its last read held a few bytes)', () => {
  // The count rises at full rate, then once by 60 bytes (the packets in
  // flight as the address went): the rate over that last read alone is
  // 2 kbit/s, under what counts as media.
  const q = new PathQuiet();
  let bytes = 0;
  let told = [];
  for (let t = 0; t <= 10000; t += TICK) {
    if (t > 0 && t < 5000) bytes += 7800;
    if (t === 5000) bytes += 60;
    if (q.read(t, bytes)) told.push(t);
  }
  assert.deepEqual(told, [6000]);
  // A low layer (50 kbit/s, 1.6 KB a tick) cut the same way.
  const low = new PathQuiet();
  bytes = 0;
  told = [];
  for (let t = 0; t <= 10000; t += TICK) {
    if (t > 0 && t < 5000) bytes += 1600;
    if (t === 5000) bytes += 100;
    if (low.read(t, bytes)) told.push(t);
  }
  assert.deepEqual(told, [6000]);
});

test('keepalives alone are no media: quiet between them is not told', () => {
  const q = new PathQuiet();
  const told = [];
  let bytes = 0;
  // A STUN check and its answer (~200 bytes) every 2.5 s for a minute.
  for (let t = 0; t <= 60000; t += TICK) {
    if (t > 0 && t % 2500 === 0) bytes += 200;
    if (q.read(t, bytes)) told.push(t);
  }
  assert.deepEqual(told, []);
});

test('a trickle under the media rate (a log line now and then) is not told', () => {
  const q = new PathQuiet();
  // 300 bytes every 500 ms (4.8 kbit/s), then nothing.
  const told = [];
  let bytes = 0;
  for (let t = 0; t <= 10000; t += TICK) {
    if (t > 0 && t <= 5000 && t % 500 === 0) bytes += 300;
    if (q.read(t, bytes)) told.push(t);
  }
  assert.deepEqual(told, []);
});

test('after the path comes back and goes again, it is told again', () => {
  const q = new PathQuiet();
  const first = run(q, { to: 8000, perTick: 7800, stopAt: 3000 });
  assert.deepEqual(first.told, [4000]);
  const second = run(q, { from: 8000, to: 16000, perTick: 7800, stopAt: 11000, bytes: first.bytes });
  assert.deepEqual(second.told, [12000]);
});

test('a count that starts over (a new transport) is a new path', () => {
  const q = new PathQuiet();
  run(q, { to: 3000, perTick: 7800 });
  // The new transport counts from 0; it carries media 2 s, then stops.
  const { told } = run(q, { from: 3250, to: 9000, perTick: 7800, stopAt: 5250, bytes: 100 });
  assert.deepEqual(told, [6250]);
});
