// PROTOCOL.md section 3 against the shared test vectors, using the very module
// the page loads (web/p2p.js).
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { readFileSync, existsSync } from 'node:fs';
import { fileURLToPath } from 'node:url';
import path from 'node:path';
import {
  hashNamespace, deriveKey, encryptBytes, decryptBytes, sealJson, openJson, fromHex, toHex, toBase64,
} from '../../web/p2p.js';

const here = path.dirname(fileURLToPath(import.meta.url));
const root = path.resolve(here, '../..');
// The repository's copy of the shared vectors; P2P_VECTORS overrides.
const candidates = [
  process.env.P2P_VECTORS,
  path.resolve(root, 'tests/vectors/e2e.json'),
].filter(Boolean);
const file = candidates.find((f) => existsSync(f));
if (!file) throw new Error(`e2e.json test vectors not found; looked in: ${candidates.join(', ')}`);
const vectors = JSON.parse(readFileSync(file, 'utf8'));

test('namespaces hash to the vectors\' subjects', async () => {
  assert.ok(vectors.namespaces.length > 0);
  for (const v of vectors.namespaces) {
    assert.equal(await hashNamespace(v.ns), v.subject, `subject of ${v.joined}`);
  }
});

test('payload vectors decrypt, and encrypt to the same bytes with their IV', async () => {
  assert.ok(vectors.payloads.length > 0);
  for (const v of vectors.payloads) {
    const key = await deriveKey(v.secret);
    assert.equal(await decryptBytes(key, fromHex(v.wire_hex)), v.plaintext);
    const wire = await encryptBytes(key, v.plaintext, fromHex(v.iv_hex));
    assert.equal(toHex(wire), v.wire_hex);
    assert.equal(toBase64(wire), v.wire_base64);
    // The WebSocket form: base64 JSON string in `data`.
    assert.deepEqual(await openJson(key, v.wire_base64), JSON.parse(v.plaintext));
  }
});

test('key is SHA-256 of the secret', async () => {
  for (const v of vectors.payloads) {
    const digest = await crypto.subtle.digest('SHA-256', new TextEncoder().encode(v.secret));
    assert.equal(toHex(digest), v.key_sha256_hex);
  }
});

test('must_fail entries are rejected', async () => {
  assert.ok(vectors.must_fail.length > 0);
  for (const v of vectors.must_fail) {
    const key = await deriveKey(v.secret);
    await assert.rejects(decryptBytes(key, fromHex(v.wire_hex)), `must fail: ${v.why}`);
    await assert.rejects(openJson(key, toBase64(fromHex(v.wire_hex))), `must fail: ${v.why}`);
  }
});

test('sealJson round-trips with a fresh random IV each time', async () => {
  const key = await deriveKey('s3cret');
  const msg = { type: 'invoke', id: 'x' };
  const a = await sealJson(key, msg);
  const b = await sealJson(key, msg);
  assert.notEqual(a, b);
  assert.deepEqual(await openJson(key, a), msg);
  await assert.rejects(openJson(key, 'AAAA'));
  await assert.rejects(openJson(key, 42));
});
