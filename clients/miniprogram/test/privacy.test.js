'use strict';
const test = require('node:test');
const assert = require('node:assert/strict');
const {setup} = require('./support/platform.js');

test('optOut() clears the queue, stops queueing and sending, and persists across restarts', async () => {
  const first = setup({batchSize: 100});
  first.client.track('before');
  first.client.optOut();
  assert.equal(first.client.isOptedOut(), true);
  assert.equal(first.client.getStats().queued, 0);
  assert.deepEqual(JSON.parse(first.storage.get('minigate_queue')), []);
  assert.equal(first.client.track('during'), false);
  assert.equal(first.client.page('pages/index/index'), false);
  await first.client.flush();
  await first.clock.advance(60000);
  assert.equal(first.net.requests.length, 0);

  const second = setup({storage: first.storage});
  assert.equal(second.client.isOptedOut(), true);
  second.client.track('after_restart');
  await second.client.flush();
  await second.clock.advance(60000);
  assert.equal(second.net.requests.length, 0);

  second.client.optIn();
  assert.equal(second.client.isOptedOut(), false);
  second.client.track('consented');
  await second.client.flush();
  assert.deepEqual(second.net.sentEvents().map((e) => e.name), ['consented']);
  const third = setup({storage: first.storage});
  assert.equal(third.client.isOptedOut(), false);
});

test('optOut() during a retry stops the retries', async () => {
  const {client, net, clock} = setup();
  net.handler = () => ({status: 503, body: {}});
  client.track('a');
  await client.flush();
  client.optOut();
  await clock.advance(600000);
  assert.equal(net.requests.length, 1);
});

test('optOutByDefault starts opted out until optIn() (consent first)', async () => {
  const {client, net} = setup({optOutByDefault: true});
  assert.equal(client.isOptedOut(), true);
  client.track('no_consent_yet');
  client.optIn();
  client.track('consented');
  await client.flush();
  assert.deepEqual(net.sentEvents().map((e) => e.name), ['consented']);
});

function deviceWithId(distinctId, sampleRate) {
  const {createStorage} = require('./support/platform.js');
  const storage = createStorage();
  storage.set('minigate_state', JSON.stringify({distinct_id: distinctId, opted_out: false}));
  return setup({storage, sampleRate});
}

test('sampling is decided per distinct id: stable across restarts, about sampleRate of devices', async () => {
  let sampledIn = 0;
  for (let i = 0; i < 2000; i++) {
    const id = 'device' + i.toString(16).padStart(8, '0');
    const a = deviceWithId(id, 0.3).client;
    const b = deviceWithId(id, 0.3).client;
    assert.equal(a.sampled, b.sampled, 'same device, same decision');
    if (a.sampled) sampledIn++;
  }
  assert.ok(sampledIn > 480 && sampledIn < 720, 'about 30% sampled in, got ' + sampledIn);
});

test('a sampled-out device sends nothing; a sampled-in one sends everything', async () => {
  let outDevice;
  let inDevice;
  for (let i = 0; !(outDevice && inDevice); i++) {
    const d = deviceWithId('dev' + i + 'abcdef', 0.5);
    if (d.client.sampled) inDevice = inDevice || d;
    else outDevice = outDevice || d;
  }
  for (const d of [outDevice, inDevice]) {
    d.client.track('a');
    d.client.page('pages/index/index');
    await d.client.flush();
    await d.clock.advance(60000);
  }
  assert.equal(outDevice.net.requests.length, 0);
  assert.equal(outDevice.client.getStats().queued, 0);
  assert.equal(inDevice.net.sentEvents().length, 2);
});

test('sampleRate 0 sends nothing and 1 sends everything', async () => {
  const none = setup({sampleRate: 0});
  none.client.track('a');
  await none.client.flush();
  assert.equal(none.net.requests.length, 0);
  const all = setup({sampleRate: 1});
  all.client.track('a');
  await all.client.flush();
  assert.equal(all.net.requests.length, 1);
});
