'use strict';
const test = require('node:test');
const assert = require('node:assert/strict');
const {setup, settle} = require('./support/platform.js');

test('the queue is persisted on every event and survives a restart, then is sent with the same ids', async () => {
  const first = setup({flushInterval: 5000});
  first.client.track('viewed', {sku: 'A1'});
  first.client.track('added');
  const stored = JSON.parse(first.storage.get('minigate_queue'));
  assert.deepEqual(stored.map((e) => e.name), ['viewed', 'added']);
  const ids = stored.map((e) => e.id);
  assert.equal(first.net.requests.length, 0, 'the app is killed before anything was sent');

  const second = setup({storage: first.storage, flushInterval: 5000});
  assert.equal(second.client.getDistinctId(), first.client.getDistinctId(), 'same device, same distinct id');
  assert.equal(second.client.getStats().queued, 2);
  await second.clock.advance(5000);
  assert.equal(second.net.requests.length, 1);
  assert.deepEqual(second.net.sentEvents().map((e) => e.id), ids);
  assert.deepEqual(second.net.sentEvents()[0].properties, {sku: 'A1'});
  assert.deepEqual(JSON.parse(second.storage.get('minigate_queue')), [], 'acknowledged events leave storage');
});

test('a batch in flight when the app dies is sent again after restart with the same ids', async () => {
  const first = setup({batchSize: 2});
  first.net.script({network: 'timeout', delay: 60000});
  first.client.track('a');
  first.client.track('b');
  await settle();
  const sentIds = first.net.sentEvents().map((e) => e.id);
  assert.equal(sentIds.length, 2);
  const second = setup({storage: first.storage});
  await second.client.flush();
  assert.deepEqual(second.net.sentEvents().map((e) => e.id), sentIds);
});

test('the queue is capped at maxQueue: the oldest events are dropped, counted and reported', async () => {
  const {client, errors, storage, net} = setup({maxQueue: 5, batchSize: 100});
  for (let i = 0; i < 8; i++) client.track('e' + i);
  assert.equal(client.getStats().dropped, 3);
  assert.equal(client.getStats().queued, 5);
  assert.deepEqual(JSON.parse(storage.get('minigate_queue')).map((e) => e.name), ['e3', 'e4', 'e5', 'e6', 'e7']);
  assert.deepEqual(errors.map((e) => e.code), ['queue_full', 'queue_full', 'queue_full']);
  await client.flush();
  assert.deepEqual(net.sentEvents().map((e) => e.name), ['e3', 'e4', 'e5', 'e6', 'e7']);
});

test('a stored queue longer than maxQueue keeps its newest events on load', () => {
  const first = setup({maxQueue: 10, batchSize: 100});
  for (let i = 0; i < 10; i++) first.client.track('e' + i);
  const second = setup({storage: first.storage, maxQueue: 4});
  assert.equal(second.client.getStats().queued, 4);
  assert.equal(second.client.getStats().dropped, 6);
  assert.deepEqual(second.client.queue.map((e) => e.name), ['e6', 'e7', 'e8', 'e9']);
});

test('storage that throws (quota) does not break tracking', async () => {
  const {client, api, net} = setup();
  api.setStorageSync = () => { throw new Error('setStorageSync:fail exceed storage max size 10Mb'); };
  assert.equal(client.track('still_works'), true);
  await client.flush();
  assert.deepEqual(net.sentEvents().map((e) => e.name), ['still_works']);
});

test('garbage in storage is ignored', () => {
  const first = setup();
  first.storage.set('minigate_queue', '{not json');
  first.storage.set('minigate_state', 'also not json');
  const second = setup({storage: first.storage});
  assert.equal(second.client.getStats().queued, 0);
  assert.match(second.client.getDistinctId(), /^[0-9a-f]{32}$/);
});
