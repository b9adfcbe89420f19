'use strict';
const test = require('node:test');
const assert = require('node:assert/strict');
const {setup} = require('./support/platform.js');

test('the distinct id is random, persisted, and the same after a restart', () => {
  const first = setup();
  const id = first.client.getDistinctId();
  assert.match(id, /^[0-9a-f]{32}$/);
  assert.equal(JSON.parse(first.storage.get('minigate_state')).distinct_id, id);
  assert.equal(setup({storage: first.storage}).client.getDistinctId(), id);
  assert.notEqual(setup().client.getDistinctId(), id, 'another device, another id');
});

test('identify() attaches user_id to later events only, and survives a restart', async () => {
  const first = setup({batchSize: 100});
  first.client.track('anonymous');
  first.client.identify('u_42');
  first.client.track('known');
  await first.client.flush();
  const [anonymous, known] = first.net.sentEvents();
  assert.equal('user_id' in anonymous, false);
  assert.equal(known.user_id, 'u_42');
  assert.equal(known.distinct_id, anonymous.distinct_id, 'the user id is bound to the device id');

  const second = setup({storage: first.storage});
  second.client.track('after_restart');
  await second.client.flush();
  assert.equal(second.net.sentEvents()[0].user_id, 'u_42');
});

test('identify() takes numeric ids as strings and refuses empty ones', async () => {
  const {client, net, errors} = setup();
  client.identify(1234);
  client.identify('');
  client.track('a');
  await client.flush();
  assert.equal(net.sentEvents()[0].user_id, '1234');
  assert.deepEqual(errors.map((e) => e.code), ['invalid_user_id']);
});

test('reset() gives a new distinct id and no user id, persisted', async () => {
  const first = setup();
  first.client.identify('u_42');
  const oldId = first.client.getDistinctId();
  first.client.reset();
  const newId = first.client.getDistinctId();
  assert.notEqual(newId, oldId);
  first.client.track('after_logout');
  await first.client.flush();
  const event = first.net.sentEvents()[0];
  assert.equal(event.distinct_id, newId);
  assert.equal('user_id' in event, false);
  const second = setup({storage: first.storage});
  assert.equal(second.client.getDistinctId(), newId);
  assert.equal(second.client.getUserId(), undefined);
});

test('a session lasts until 30 minutes without events', async () => {
  const {client, net, clock} = setup({batchSize: 100});
  client.track('a');
  await clock.advance(29 * 60000);
  client.track('b');
  await clock.advance(30 * 60000);
  client.track('c');
  await clock.advance(30 * 60000 + 1);
  client.track('d');
  await client.flush();
  const [a, b, c, d] = net.sentEvents();
  assert.equal(a.session_id, b.session_id);
  assert.equal(b.session_id, c.session_id, 'exactly 30 minutes is still the same session');
  assert.notEqual(c.session_id, d.session_id);
  assert.match(d.session_id, /^[0-9a-f]{32}$/);
});

test('reset() starts a new session', async () => {
  const {client, net} = setup();
  client.track('a');
  client.reset();
  client.track('b');
  await client.flush();
  const [a, b] = net.sentEvents();
  assert.notEqual(a.session_id, b.session_id);
});

test('ids come from the injected random source, so a CSPRNG can be plugged in', () => {
  let calls = 0;
  const {client} = setup({randomBytes: (n) => { calls++; return new Uint8Array(n).fill(0xab); }});
  assert.equal(client.getDistinctId(), 'ab'.repeat(16));
  assert.ok(calls >= 1);
});

function withoutGlobalCrypto(fn) {
  const saved = Object.getOwnPropertyDescriptor(globalThis, 'crypto');
  Object.defineProperty(globalThis, 'crypto', {value: undefined, configurable: true, writable: true});
  try {
    return fn();
  } finally {
    if (saved) Object.defineProperty(globalThis, 'crypto', saved);
    else delete globalThis.crypto;
  }
}

test('without a global crypto, ids come from wx.getRandomValues once it answered', async () => {
  await withoutGlobalCrypto(async () => {
    const {createWx, settle} = require('./support/platform.js');
    const minigate = require('../minigate.js');
    const wx = createWx();
    let asked = 0;
    wx.getRandomValues = (o) => {
      asked++;
      Promise.resolve().then(() => o.success({randomValues: new Uint8Array(o.length).fill(0x5a).buffer}));
    };
    const client = minigate.createClient({endpoint: 'https://pay.example.com', key: 'mg_pk_test_x',
      platform: 'wechat', api: wx, autoTrack: false, setTimeout: () => 0, clearTimeout: () => {}});
    assert.equal(asked, 1);
    assert.match(client.getDistinctId(), /^[0-9a-f]{32}$/);
    assert.notEqual(client.getDistinctId(), '5a'.repeat(16), 'the pool was still empty at init');
    await settle();
    assert.equal(client.newId(), '5a'.repeat(16));
  });
});

test('without any CSPRNG, ids fall back to Math.random and stay 128-bit hex', () => {
  withoutGlobalCrypto(() => {
    const {client} = setup();
    const ids = new Set();
    for (let i = 0; i < 1000; i++) ids.add(client.newId());
    assert.equal(ids.size, 1000);
    for (const id of ids) assert.match(id, /^[0-9a-f]{32}$/);
  });
});
