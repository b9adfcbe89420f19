'use strict';
const test = require('node:test');
const assert = require('node:assert/strict');
const {setup} = require('./support/platform.js');

const ok = (n) => ({status: 200, body: {accepted: n, rejected: []}});

test('HTTP 500 keeps the batch and retries after 1 s, 2 s, 4 s with the same event ids', async () => {
  const {client, net, clock} = setup({batchSize: 2});
  const err = {status: 500, body: {error: {code: 'internal_error', message: 'boom'}}};
  net.script(err, err, err, ok(2));
  client.track('a');
  client.track('b');
  await clock.advance(0);
  assert.equal(net.requests.length, 1);
  const ids = net.requests[0].body.events.map((e) => e.id);
  const times = [clock.now()];
  for (const wait of [1000, 2000, 4000]) {
    await clock.advance(wait - 1);
    assert.equal(net.requests.length, times.length, 'not before ' + wait + ' ms');
    await clock.advance(1);
    assert.equal(net.requests.length, times.length + 1, 'at ' + wait + ' ms');
    times.push(clock.now());
  }
  for (const req of net.requests) assert.deepEqual(req.body.events.map((e) => e.id), ids);
  assert.equal(client.getStats().queued, 0);
  assert.equal(client.getStats().sent, 2);
  const sentAts = net.requests.map((r) => r.body.sent_at);
  assert.deepEqual(sentAts, times, 'sent_at is the clock of each attempt');
});

test('backoff adds up to 20% jitter and is capped at 5 minutes', async () => {
  const {client, net, clock} = setup({random: () => 0.5, maxRetries: 100});
  net.handler = () => ({status: 503, body: {}});
  client.track('a');
  await client.flush();
  const waits = [];
  for (let i = 0; i < 12; i++) {
    waits.push(clock.pending()[0]);
    await clock.advance(clock.pending()[0]);
  }
  assert.deepEqual(waits.slice(0, 4), [1100, 2200, 4400, 8800]);
  assert.equal(Math.max(...waits), 300000);
  assert.equal(waits[waits.length - 1], 300000);
});

test('a network failure keeps the batch and retries with the same ids', async () => {
  const {client, net, clock, errors} = setup();
  net.script({network: 'timeout'}, ok(1));
  client.track('a');
  await client.flush();
  assert.equal(net.requests.length, 1);
  assert.equal(client.getStats().queued, 1);
  await clock.advance(1000);
  assert.equal(net.requests.length, 2);
  assert.equal(net.requests[0].body.events[0].id, net.requests[1].body.events[0].id);
  assert.equal(client.getStats().queued, 0);
  assert.deepEqual(errors, []);
});

test('429 honours Retry-After seconds', async () => {
  const {client, net, clock} = setup();
  net.script({status: 429, headers: {'retry-after': '30'}, body: {error: {code: 'rate_limited'}}}, ok(1));
  client.track('a');
  await client.flush();
  await clock.advance(29999);
  assert.equal(net.requests.length, 1);
  assert.equal(client.track('b'), true);
  await client.flush();
  assert.equal(net.requests.length, 1, 'flush() during Retry-After does not send');
  await clock.advance(1);
  assert.equal(net.requests.length, 2);
  assert.deepEqual(net.requests[1].body.events.map((e) => e.name), ['a', 'b']);
  assert.equal(net.requests[1].body.events[0].id, net.requests[0].body.events[0].id);
});

test('429 without Retry-After falls back to backoff', async () => {
  const {client, net, clock} = setup();
  net.script({status: 429, body: {}}, ok(1));
  client.track('a');
  await client.flush();
  assert.deepEqual(clock.pending(), [1000]);
});

test('a batch is given up after maxRetries server errors, reported, and the queue moves on', async () => {
  const {client, net, clock, errors} = setup({maxRetries: 2, batchSize: 1});
  const err = {status: 500, body: {error: {code: 'internal_error', message: 'poison'}}};
  net.script(err, err, err, ok(1));
  client.track('poison');
  await client.flush();
  client.track('next');
  await clock.advance(1000);
  await clock.advance(2000);
  assert.deepEqual(net.requests.map((r) => r.body.events[0].name), ['poison', 'poison', 'poison', 'next']);
  assert.equal(errors.length, 1);
  assert.equal(errors[0].code, 'internal_error');
  assert.equal(errors[0].status, 500);
  assert.equal(client.getStats().failed, 1);
  assert.equal(client.getStats().queued, 0);
});

test('2xx with rejected events removes them all and reports each rejected one', async () => {
  const {client, net, errors} = setup({batchSize: 3});
  net.handler = (req) => ({status: 200, body: {accepted: 2, rejected: [
    {index: 1, id: req.body.events[1].id, code: 'pii_in_properties', message: 'properties.phone looks like a phone'},
  ]}});
  client.track('a');
  client.track('b', {note: 'call 13800138000'});
  client.track('c');
  await client.flush();
  assert.equal(net.requests.length, 1);
  assert.equal(client.getStats().queued, 0, 'rejected events would never succeed: not retried');
  assert.equal(client.getStats().sent, 2);
  assert.equal(client.getStats().rejected, 1);
  assert.equal(errors.length, 1);
  assert.equal(errors[0].code, 'pii_in_properties');
  assert.equal(errors[0].event_id, net.requests[0].body.events[1].id);
  assert.equal(errors[0].event_name, 'b');
  await client.flush();
  assert.equal(net.requests.length, 1);
});

for (const [status, code] of [[400, 'invalid_batch'], [401, 'invalid_publishable_key'], [403, 'forbidden'],
  [413, 'payload_too_large']]) {
  test(`HTTP ${status} drops the batch and reports ${code}`, async () => {
    const {client, net, clock, errors} = setup({batchSize: 2});
    net.script({status, body: {error: {type: 'invalid_request_error', code, message: 'no'}}});
    client.track('a');
    client.track('b');
    await client.flush();
    assert.equal(client.getStats().queued, 0);
    assert.equal(client.getStats().failed, 2);
    assert.equal(errors.length, 1);
    assert.equal(errors[0].code, code);
    assert.equal(errors[0].status, status);
    assert.deepEqual(errors[0].event_ids, net.requests[0].body.events.map((e) => e.id));
    await clock.advance(600000);
    assert.equal(net.requests.length, 1, 'never retried');
  });
}

test('only one request is in flight; events tracked meanwhile go in the next request', async () => {
  const {client, net, clock} = setup({batchSize: 2, flushInterval: 100000});
  net.handler = (req) => ({status: 200, body: {accepted: req.body.events.length, rejected: []}, delay: 500});
  client.track('a');
  client.track('b');
  client.track('c');
  client.track('d');
  client.flush();
  client.flush();
  await clock.advance(100);
  assert.equal(net.requests.length, 1);
  assert.equal(net.inFlight, 1);
  await clock.advance(2000);
  assert.equal(net.maxInFlight, 1);
  assert.deepEqual(net.batches().map((r) => r.body.events.map((e) => e.name)), [['a', 'b'], ['c', 'd']]);
});
