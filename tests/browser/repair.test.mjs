// How long the page holds frames for repairs (web/p2p.js, repairWait):
// pure arithmetic on a path's round trip, loss and packet rate.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { repairWait } from '../../web/p2p.js';

test('light loss waits for one try: two round trips and a margin', () => {
  assert.equal(repairWait(50, 0.01, 250), 140);
  assert.equal(repairWait(50, 0, 250), 140);
  // A trickle of packets at 5 %: few lost a second, one try is enough.
  assert.equal(repairWait(50, 0.05, 20), 140);
});

test('5 % loss at a full layer waits for a second try', () => {
  // 12 packets lost a second; a try fails one time in ten: one try leaves
  // ~1.2 a second late, two ~0.12.
  assert.equal(repairWait(50, 0.05, 250), 190);
});

test('the wait is capped, and more loss asks for no more than three tries', () => {
  assert.equal(repairWait(150, 0.05, 250), 400);
  assert.equal(repairWait(20, 0.3, 1000), 4 * 20 + 40);
});
