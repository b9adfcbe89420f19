'use strict';
const test = require('node:test');
const assert = require('node:assert/strict');
const {setup, settle, START, KEY} = require('./support/platform.js');

test('a full batch is sent at once, in one request, with the wire format', async () => {
  const {client, net} = setup({batchSize: 3});
  client.track('add_to_cart', {sku: 'A1', qty: 2, gift: false});
  client.track('checkout');
  await settle();
  assert.equal(net.requests.length, 0, 'nothing before the batch is full');
  client.track('pay_clicked');
  await settle();
  assert.equal(net.requests.length, 1);
  const req = net.requests[0];
  assert.equal(req.url, 'https://pay.example.com/v1/analytics/collect');
  assert.equal(req.method, 'POST');
  assert.equal(req.headers['Content-Type'], 'application/json');
  assert.equal(req.headers.Authorization, 'Bearer ' + KEY);
  assert.equal(typeof req.raw, 'string', 'the body is sent as JSON text');
  assert.deepEqual(Object.keys(req.body).sort(), ['context', 'events', 'sent_at']);
  assert.deepEqual(req.body.context, {
    platform: 'wechat', sdk: 'minigate-miniprogram/0.1.0',
    system: {brand: 'Apple', model: 'iPhone 13', system: 'iOS 16.1', version: '8.0.40', SDKVersion: '3.0.0'},
  });
  assert.deepEqual(req.body.events.map((e) => e.name), ['add_to_cart', 'checkout', 'pay_clicked']);
  const first = req.body.events[0];
  assert.deepEqual(Object.keys(first).sort(),
    ['distinct_id', 'id', 'name', 'properties', 'session_id', 'ts', 'type']);
  assert.equal(first.type, 'event');
  assert.deepEqual(first.properties, {sku: 'A1', qty: 2, gift: false});
  assert.equal(first.distinct_id, client.getDistinctId());
  for (const e of req.body.events) assert.match(e.id, /^[A-Za-z0-9_-]{8,64}$/);
  assert.equal(new Set(req.body.events.map((e) => e.id)).size, 3);
  assert.equal(client.getStats().queued, 0);
  assert.equal(client.getStats().sent, 3);
});

test('ts is the client clock at track time and sent_at the client clock at send time', async () => {
  const {client, net, clock} = setup({flushInterval: 5000});
  client.track('a');
  await clock.advance(1234);
  client.track('b');
  await clock.advance(5000);
  assert.equal(net.requests.length, 1);
  const body = net.requests[0].body;
  assert.deepEqual(body.events.map((e) => e.ts), [START, START + 1234]);
  assert.equal(body.sent_at, START + 5000, 'the timer runs from the first unsent event');
});

test('the timer sends a partial batch after flushInterval, not before', async () => {
  const {client, net, clock} = setup({flushInterval: 5000, batchSize: 20});
  client.track('a');
  await clock.advance(4999);
  assert.equal(net.requests.length, 0);
  await clock.advance(1);
  assert.equal(net.requests.length, 1);
  assert.equal(net.requests[0].body.events.length, 1);
  client.track('b');
  await clock.advance(5000);
  assert.equal(net.requests.length, 2);
});

test('flush() drains a long queue in batches of batchSize, one request at a time', async () => {
  const {client, net, clock} = setup({batchSize: 4, flushInterval: 60000});
  net.handler = (req) => ({status: 200, body: {accepted: req.body.events.length, rejected: []}, delay: 100});
  for (let i = 0; i < 10; i++) client.track('e' + i);
  const done = client.flush();
  await clock.advance(1000);
  await done;
  assert.deepEqual(net.batches().map((r) => r.body.events.length), [4, 4, 2]);
  assert.equal(net.maxInFlight, 1);
  assert.deepEqual(net.sentEvents().map((e) => e.name), Array.from({length: 10}, (_, i) => 'e' + i));
});

test('batchSize is capped at 100 events per request', async () => {
  const {client, net} = setup({batchSize: 1000});
  for (let i = 0; i < 100; i++) client.track('e');
  await settle();
  assert.equal(net.requests.length, 1);
  assert.equal(net.requests[0].body.events.length, 100);
});

test('properties are cleaned client-side: long values cut, long keys, bad types and extras dropped', async () => {
  const {client, net} = setup();
  const props = {long: 'x'.repeat(1500), ['k'.repeat(101)]: 'v', obj: {a: 1}, list: [1], nan: NaN, inf: Infinity,
    nil: null, ok: 1.5};
  for (let i = 0; i < 60; i++) props['p' + i] = i;
  client.track('big', props);
  await client.flush();
  const sent = net.sentEvents()[0].properties;
  assert.equal(sent.long.length, 1000);
  assert.equal(sent.ok, 1.5);
  for (const key of ['k'.repeat(101), 'obj', 'list', 'nan', 'inf', 'nil']) assert.equal(key in sent, false, key);
  assert.equal(Object.keys(sent).length, 50);
});

test('an invalid event name is reported and never queued', async () => {
  const {client, net, errors} = setup();
  assert.equal(client.track('1starts-with-digit'), false);
  assert.equal(client.track('has space'), false);
  assert.equal(client.track('x'.repeat(101)), false);
  assert.equal(client.track('$ok.name:v-2'), true);
  await client.flush();
  assert.deepEqual(net.sentEvents().map((e) => e.name), ['$ok.name:v-2']);
  assert.deepEqual(errors.map((e) => e.code), ['invalid_event', 'invalid_event', 'invalid_event']);
});

test('a page() view carries the route without its query string; later events carry the page', async () => {
  const {client, net} = setup();
  client.page('/pages/goods/detail?id=9&phone=13800138000', {from: 'share'});
  client.track('add_to_cart');
  await client.flush();
  const [view, later] = net.sentEvents();
  assert.equal(view.type, 'page_view');
  assert.equal(view.name, '$pageview');
  assert.equal(view.page, 'pages/goods/detail');
  assert.deepEqual(view.properties, {from: 'share'});
  assert.equal(later.page, 'pages/goods/detail');
});

test('app_version comes from the option or the account info', async () => {
  const {client, net} = setup({appVersion: '1.4.2'});
  client.track('a');
  await client.flush();
  assert.equal(net.requests[0].body.context.app_version, '1.4.2');
  const other = setup();
  other.api.getAccountInfoSync = () => ({miniProgram: {appId: 'wx1', envVersion: 'release', version: '2.0.0'}});
  const c2 = require('../minigate.js').createClient({endpoint: 'https://pay.example.com', key: KEY,
    platform: 'wechat', api: other.api, autoTrack: false});
  assert.equal(c2.context.app_version, '2.0.0');
});

test('system info comes from getDeviceInfo + getAppBaseInfo where WeChat has them, those five keys only', () => {
  const {api} = setup();
  api.getDeviceInfo = () => ({brand: 'Xiaomi', model: 'M2012K11AC', system: 'Android 13', platform: 'android',
    benchmarkLevel: 30});
  api.getAppBaseInfo = () => ({SDKVersion: '3.3.4', version: '8.0.47', language: 'zh_CN', theme: 'light'});
  api.getSystemInfoSync = () => { throw new Error('deprecated API must not be called'); };
  const client = require('../minigate.js').createClient({endpoint: 'https://pay.example.com', key: KEY,
    platform: 'wechat', api, autoTrack: false});
  assert.deepEqual(client.context.system, {brand: 'Xiaomi', model: 'M2012K11AC', system: 'Android 13',
    version: '8.0.47', SDKVersion: '3.3.4'});
});
