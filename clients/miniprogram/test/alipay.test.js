'use strict';
const test = require('node:test');
const assert = require('node:assert/strict');
const {setup, KEY} = require('./support/platform.js');

test('Alipay: my.request gets `headers`, the answer is read from res.status', async () => {
  const {client, net} = setup({platform: 'alipay'});
  client.track('a');
  await client.flush();
  const req = net.requests[0];
  assert.equal(req.headers.Authorization, 'Bearer ' + KEY);
  assert.equal(req.headers['Content-Type'], 'application/json');
  assert.equal(req.options.header, undefined, 'WeChat\'s `header` is not used on Alipay');
  assert.equal(client.getStats().queued, 0, 'the 200 answer (res.status) acknowledged the batch');
  assert.equal(client.getStats().sent, 1);
  assert.deepEqual(req.body.context, {
    platform: 'alipay', sdk: 'minigate-miniprogram/0.1.0',
    system: {brand: 'HUAWEI', model: 'NOH-AN00', system: '10', version: '10.5.36', SDKVersion: '2.8.10'},
  });
});

test('WeChat: wx.request gets `header`, not `headers`', async () => {
  const {client, net} = setup({platform: 'wechat'});
  client.track('a');
  await client.flush();
  assert.equal(net.requests[0].options.headers, undefined);
  assert.equal(net.requests[0].headers.Authorization, 'Bearer ' + KEY);
});

test('Alipay: an HTTP 500 arriving through fail (error 19) is retried, not treated as success', async () => {
  const {client, net, clock} = setup({platform: 'alipay'});
  net.script({status: 500, body: {error: {code: 'internal_error'}}});
  client.track('a');
  await client.flush();
  assert.equal(client.getStats().queued, 1);
  await clock.advance(1000);
  assert.equal(net.requests.length, 2);
  assert.equal(client.getStats().queued, 0);
});

test('Alipay: 429 in fail carries Retry-After in res.headers', async () => {
  const {client, net, clock} = setup({platform: 'alipay'});
  net.script({status: 429, headers: {'Retry-After': '7'}, body: {error: {code: 'rate_limited'}}});
  client.track('a');
  await client.flush();
  assert.deepEqual(clock.pending(), [7000]);
});

test('Alipay: 401 drops the batch and reports the gateway error code', async () => {
  const {client, net, errors} = setup({platform: 'alipay'});
  net.script({status: 401, body: {error: {code: 'invalid_publishable_key', message: 'unknown key'}}});
  client.track('a');
  await client.flush();
  assert.equal(client.getStats().queued, 0);
  assert.deepEqual(errors.map((e) => [e.code, e.status]), [['invalid_publishable_key', 401]]);
});

test('Alipay: a network failure (error 12, no HTTP status) is retried', async () => {
  const {client, net, clock, errors} = setup({platform: 'alipay'});
  net.script({network: '网络出错'});
  client.track('a');
  await client.flush();
  await clock.advance(1000);
  assert.equal(net.requests.length, 2);
  assert.equal(client.getStats().queued, 0);
  assert.deepEqual(errors, []);
});

test('Alipay: storage goes through {key} / {key, data} and survives a restart', async () => {
  const first = setup({platform: 'alipay'});
  first.client.identify('u_7');
  first.client.track('a');
  assert.ok(first.storage.has('minigate_queue'));
  assert.ok(first.storage.has('minigate_state'));
  const second = setup({platform: 'alipay', storage: first.storage});
  assert.equal(second.client.getDistinctId(), first.client.getDistinctId());
  await second.client.flush();
  assert.deepEqual(second.net.sentEvents().map((e) => [e.name, e.user_id]), [['a', 'u_7']]);
});
