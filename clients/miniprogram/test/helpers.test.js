'use strict';
const test = require('node:test');
const assert = require('node:assert/strict');
const {setup, settle} = require('./support/platform.js');

const BACKEND = 'https://shop.example.com/api/login';

function withBackend(env, answer) {
  const collect = env.net.handler;
  env.net.handler = (req) => (req.url === BACKEND ? answer(req) : collect(req));
  return env;
}

test('login() on WeChat posts {code, platform} to the backend, identifies the user and resolves the answer',
  async () => {
    const env = withBackend(setup(), (req) => ({status: 200, body: {user_id: 'u_1001', openid_bound: true,
      echo: req.body}}));
    env.api.loginCodes.push('081AbCdE2');
    const answer = await env.client.login({url: BACKEND, header: {'X-Shop': 's1'}});
    const req = env.net.requests.find((r) => r.url === BACKEND);
    assert.equal(req.method, 'POST');
    assert.equal(req.headers['Content-Type'], 'application/json');
    assert.equal(req.headers['X-Shop'], 's1');
    assert.equal(req.headers.Authorization, undefined, 'the publishable key is not sent to the merchant');
    assert.deepEqual(req.body, {code: '081AbCdE2', platform: 'wechat'});
    assert.equal(answer.user_id, 'u_1001');
    assert.equal(answer.openid_bound, true);
    assert.equal(env.client.getUserId(), 'u_1001');
    env.client.track('after_login');
    await env.client.flush();
    assert.equal(env.net.sentEvents()[0].user_id, 'u_1001');
  });

test('login() on Alipay uses my.getAuthCode with scopes auth_base', async () => {
  const env = withBackend(setup({platform: 'alipay'}), () => ({status: 200, body: {user_id: 42}}));
  env.api.authCodes.push('4b203fe6c11548bcabd8da5bb087a83b');
  await env.client.login({url: BACKEND});
  assert.deepEqual(env.api.authCalls, [{scopes: 'auth_base'}]);
  const req = env.net.requests.find((r) => r.url === BACKEND);
  assert.deepEqual(req.body, {code: '4b203fe6c11548bcabd8da5bb087a83b', platform: 'alipay'});
  assert.equal(env.client.getUserId(), '42');
});

test('login() rejects on a backend error or an answer without user_id, and identifies nobody', async () => {
  for (const answer of [{status: 500, body: {error: 'x'}}, {status: 200, body: {ok: true}},
    {status: 200, body: 'not json'}]) {
    const env = withBackend(setup(), () => answer);
    await assert.rejects(env.client.login({url: BACKEND}), (err) => err.code === 'login_failed');
    assert.equal(env.client.getUserId(), undefined);
  }
});

test('login() rejects when wx.login fails, without calling the backend', async () => {
  const env = setup();
  env.api.loginError = 'system error';
  await assert.rejects(env.client.login({url: BACKEND}), /login:fail system error/);
  assert.equal(env.net.requests.length, 0);
});

const WECHAT_ORDER = {
  id: 'ord_7Yk2', channel: 'wechat_mini', out_trade_no: 'MGAGRBNC7OXG6DCXTJC6THTQSX',
  pay_params: {timeStamp: '1764138000', nonceStr: 'n0nc3', package: 'prepay_id=wx201410272009395522657a690389285100',
    signType: 'RSA', paySign: 'c2lnbmF0dXJl', appId: 'wx8888888888888888'},
};

test('pay() on WeChat passes exactly the five requestPayment fields and emits request/result events', async () => {
  const env = setup({batchSize: 100, flushInterval: 600000});
  const result = await env.client.pay(WECHAT_ORDER);
  assert.deepEqual(result, {status: 'success'});
  assert.deepEqual(env.api.paymentCalls, [{timeStamp: '1764138000', nonceStr: 'n0nc3',
    package: 'prepay_id=wx201410272009395522657a690389285100', signType: 'RSA', paySign: 'c2lnbmF0dXJl'}]);
  await settle();
  assert.equal(env.net.batches().length, 1, 'pay() flushes without waiting for the timer');
  const events = env.net.sentEvents();
  assert.deepEqual(events.map((e) => [e.name, e.properties]), [
    ['$payment_request', {order_id: 'ord_7Yk2'}],
    ['$payment_result', {order_id: 'ord_7Yk2', status: 'success'}],
  ]);
});

test('pay() on WeChat maps a cancel and a failure', async () => {
  const env = setup();
  env.api.paymentOutcome = 'cancel';
  assert.deepEqual(await env.client.pay(WECHAT_ORDER), {status: 'cancel'});
  env.api.paymentOutcome = 'payment restricted';
  const failed = await env.client.pay(WECHAT_ORDER);
  assert.equal(failed.status, 'fail');
  assert.equal(failed.error, 'requestPayment:fail payment restricted');
  await env.client.flush();
  const results = env.net.sentEvents().filter((e) => e.name === '$payment_result').map((e) => e.properties);
  assert.deepEqual(results, [
    {order_id: 'ord_7Yk2', status: 'cancel'},
    {order_id: 'ord_7Yk2', status: 'fail', error: 'requestPayment:fail payment restricted'},
  ]);
});

const ALIPAY_ORDER = {id: 'ord_Al1', channel: 'alipay_mini', pay_params: {tradeNO: '2025011522001400001234567890'}};

test('pay() on Alipay calls my.tradePay with tradeNO and maps every result code', async () => {
  const cases = [['9000', 'success'], ['6001', 'cancel'], ['8000', 'unknown'], ['6004', 'unknown'],
    ['4000', 'fail'], ['6002', 'fail']];
  for (const [code, status] of cases) {
    const env = setup({platform: 'alipay'});
    env.api.tradePayResult = {resultCode: code, memo: ''};
    const result = await env.client.pay(ALIPAY_ORDER);
    assert.equal(result.status, status, code);
    assert.deepEqual(env.api.tradePayCalls, [{tradeNO: '2025011522001400001234567890'}]);
    await env.client.flush();
    const [request, outcome] = env.net.sentEvents();
    assert.deepEqual(request.properties, {order_id: 'ord_Al1'});
    assert.equal(outcome.name, '$payment_result');
    assert.equal(outcome.properties.status, status);
    if (status === 'fail' || status === 'unknown') assert.equal(outcome.properties.error, code);
  }
});

test('pay() refuses an order for the other platform or a malformed order, emitting nothing', async () => {
  const env = setup({platform: 'alipay'});
  await assert.rejects(env.client.pay(WECHAT_ORDER), (e) => e.code === 'channel_platform_mismatch');
  await assert.rejects(env.client.pay({id: 'ord_1', channel: 'jdpay_h5', pay_params: {}}),
    (e) => e.code === 'invalid_request');
  await assert.rejects(env.client.pay({channel: 'alipay_mini'}), (e) => e.code === 'invalid_request');
  assert.equal(env.client.getStats().queued, 0);
  assert.equal(env.api.tradePayCalls.length, 0);
});

test('pay() still works for an opted-out user, without events', async () => {
  const env = setup();
  env.client.optOut();
  assert.deepEqual(await env.client.pay(WECHAT_ORDER), {status: 'success'});
  await env.client.flush();
  assert.equal(env.net.requests.length, 0);
});
