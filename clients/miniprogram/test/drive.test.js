'use strict';
/* The end-to-end driver (e2e/drive.js) against a small HTTP server playing gateway, merchant backend and payer. */
const test = require('node:test');
const assert = require('node:assert/strict');
const http = require('node:http');
const fs = require('node:fs');
const os = require('node:os');
const path = require('node:path');
const {spawn} = require('node:child_process');

const DRIVER = path.join(__dirname, '..', 'e2e', 'drive.js');
const KEY = 'mg_pk_test_e2e0001';

function startServer(knobs = {}) {
  const seen = {batches: [], logins: [], payments: []};
  let failuresLeft = knobs.failFirst || 0;
  const server = http.createServer((req, res) => {
    let text = '';
    req.on('data', (chunk) => { text += chunk; });
    req.on('end', () => {
      const send = (status, body, headers = {}) => {
        res.writeHead(status, {'Content-Type': 'application/json', ...headers});
        res.end(JSON.stringify(body));
      };
      const body = text ? JSON.parse(text) : {};
      if (req.method === 'POST' && req.url === '/v1/analytics/collect') {
        if (req.headers.authorization !== 'Bearer ' + KEY) {
          return send(401, {error: {type: 'authentication_error', code: 'invalid_publishable_key', message: 'no'}});
        }
        if (req.headers['content-type'] !== 'application/json') return send(415, {error: {code: 'bad_type'}});
        seen.batches.push(body);
        if (failuresLeft > 0) {
          failuresLeft--;
          return send(503, {error: {code: 'unavailable', message: 'try later'}});
        }
        const rejected = [];
        body.events.forEach((e, index) => {
          if (JSON.stringify(e.properties).includes('13800138000')) {
            rejected.push({index, id: e.id, code: 'pii_in_properties', message: 'phone number in properties'});
          }
        });
        return send(200, {accepted: body.events.length - rejected.length, rejected});
      }
      if (req.method === 'POST' && req.url === '/shop/login') {
        seen.logins.push(body);
        if (body.code !== 'sandbox-code-1') return send(400, {error: 'bad code'});
        return send(200, {user_id: 'u_e2e', openid: 'o_masked'});
      }
      if (req.method === 'POST' && req.url === '/sandbox/pay') {
        seen.payments.push(body);
        return send(200, {out_trade_no: body.out_trade_no, trade_state: 'SUCCESS'});
      }
      return send(404, {error: {code: 'not_found'}});
    });
  });
  return new Promise((resolve) => {
    server.listen(0, '127.0.0.1', () => {
      const base = 'http://127.0.0.1:' + server.address().port;
      resolve({server, seen, base, close: () => new Promise((r) => server.close(r))});
    });
  });
}

function drive(scenario) {
  const file = path.join(fs.mkdtempSync(path.join(os.tmpdir(), 'minigate-e2e-')), 'scenario.json');
  fs.writeFileSync(file, JSON.stringify(scenario));
  return runDriver([file]);
}

function runDriver(args) {
  return new Promise((resolve) => {
    const child = spawn(process.execPath, [DRIVER, ...args], {cwd: path.join(__dirname, '..')});
    let stdout = '';
    let stderr = '';
    child.stdout.on('data', (d) => { stdout += d; });
    child.stderr.on('data', (d) => { stderr += d; });
    child.on('close', (code) => {
      const lines = stdout.trim().split('\n').filter(Boolean);
      resolve({code, stderr, lines, report: lines.length ? JSON.parse(lines[lines.length - 1]) : null});
    });
  });
}

const ORDER = {
  id: 'ord_e2e1', channel: 'wechat_mini', out_trade_no: 'MGE2E0000000001',
  pay_params: {timeStamp: '1764138000', nonceStr: 'abc', package: 'prepay_id=wx1', signType: 'RSA', paySign: 'sig'},
};

test('a full scenario: pages, events, login, payments, a second device; exit 0 and one JSON line', async () => {
  const gw = await startServer();
  try {
    const {code, report, lines, stderr} = await drive({
      endpoint: gw.base, key: KEY, backend_login_url: gw.base + '/shop/login', login_code: 'sandbox-code-1',
      pay_url: gw.base + '/sandbox/pay',
      steps: [
        {do: 'page', path: 'pages/index/index'},
        {do: 'track', name: 'add_to_cart', properties: {sku: 'A1', qty: 1}},
        {do: 'login'},
        {do: 'pay', order: ORDER, result: 'success'},
        {do: 'pay', order: {...ORDER, id: 'ord_e2e2', out_trade_no: 'MGE2E0000000002'}, result: 'cancel'},
        {do: 'flush'},
        {do: 'device', name: 'phone-2'},
        {do: 'track', name: 'opened'},
      ],
    });
    assert.equal(stderr, '');
    assert.equal(code, 0, JSON.stringify(report));
    assert.equal(lines.length, 1);
    assert.deepEqual(report.errors, []);
    const events = gw.seen.batches.flatMap((b) => b.events);
    assert.equal(report.sent, events.length);
    assert.deepEqual(events.map((e) => e.name), ['$pageview', 'add_to_cart', '$payment_request', '$payment_result',
      '$payment_request', '$payment_result', 'opened']);
    assert.deepEqual(Object.keys(report.distinct_ids), ['default', 'phone-2']);
    assert.notEqual(report.distinct_ids.default, report.distinct_ids['phone-2']);
    const first = events.slice(0, 6);
    for (const e of first) assert.equal(e.distinct_id, report.distinct_ids.default);
    assert.deepEqual(first.map((e) => e.user_id), [undefined, undefined, 'u_e2e', 'u_e2e', 'u_e2e', 'u_e2e']);
    assert.equal(events[6].distinct_id, report.distinct_ids['phone-2']);
    assert.equal(events[6].user_id, undefined);
    assert.deepEqual(gw.seen.logins, [{code: 'sandbox-code-1', platform: 'wechat'}]);
    assert.deepEqual(gw.seen.payments, [{out_trade_no: 'MGE2E0000000001'}], 'the payer confirms only success');
    assert.deepEqual(events[5].properties, {order_id: 'ord_e2e2', status: 'cancel'});
  } finally {
    await gw.close();
  }
});

test('the Alipay flavour reaches the gateway with `headers` and pays through tradePay', async () => {
  const gw = await startServer();
  try {
    const {code, report} = await drive({
      endpoint: gw.base, key: KEY, platform: 'alipay', pay_url: gw.base + '/sandbox/pay',
      steps: [{do: 'pay', order: {id: 'ord_a1', channel: 'alipay_mini', out_trade_no: 'MGA1',
        pay_params: {tradeNO: '2025011522001400001234567890'}}, result: 'success'}],
    });
    assert.equal(code, 0, JSON.stringify(report));
    assert.equal(report.sent, 2);
    assert.equal(gw.seen.batches[0].context.platform, 'alipay');
    assert.deepEqual(gw.seen.payments, [{out_trade_no: 'MGA1'}]);
  } finally {
    await gw.close();
  }
});

test('a wrong key fails: exit 1 with the gateway error', async () => {
  const gw = await startServer();
  try {
    const {code, report} = await drive({endpoint: gw.base, key: 'mg_pk_test_wrong',
      steps: [{do: 'track', name: 'a'}]});
    assert.equal(code, 1);
    assert.equal(report.sent, 0);
    assert.deepEqual(report.errors.map((e) => [e.code, e.status]), [['invalid_publishable_key', 401]]);
  } finally {
    await gw.close();
  }
});

test('a rejected event and a failed login are reported, exit 1', async () => {
  const gw = await startServer();
  try {
    const {code, report} = await drive({
      endpoint: gw.base, key: KEY, backend_login_url: gw.base + '/shop/login', login_code: 'stale',
      steps: [{do: 'track', name: 'contact', properties: {note: 'call 13800138000'}}, {do: 'track', name: 'ok'},
        {do: 'login'}],
    });
    assert.equal(code, 1);
    assert.equal(report.sent, 1);
    assert.deepEqual(report.errors.map((e) => e.code).sort(), ['login_failed', 'pii_in_properties']);
    assert.equal(report.errors.find((e) => e.code === 'login_failed').step, 2);
  } finally {
    await gw.close();
  }
});

test('a 503 is retried by the SDK before the driver reports', async () => {
  const gw = await startServer({failFirst: 1});
  try {
    const {code, report} = await drive({endpoint: gw.base, key: KEY, steps: [{do: 'track', name: 'a'}]});
    assert.equal(code, 0, JSON.stringify(report));
    assert.equal(report.sent, 1);
    assert.equal(gw.seen.batches.length, 2);
    assert.equal(gw.seen.batches[0].events[0].id, gw.seen.batches[1].events[0].id);
  } finally {
    await gw.close();
  }
});

test('a payment whose outcome differs from the scenario is an error', async () => {
  const gw = await startServer();
  try {
    const {code, report} = await drive({endpoint: gw.base, key: KEY, pay_url: gw.base + '/nowhere',
      steps: [{do: 'pay', order: ORDER, result: 'success'}]});
    assert.equal(code, 1);
    assert.equal(report.errors[0].code, 'payment_fail');
    assert.match(report.errors[0].message, /HTTP 404/);
  } finally {
    await gw.close();
  }
});

test('bad usage exits 2 without a report', async () => {
  const none = await runDriver([]);
  assert.equal(none.code, 2);
  assert.equal(none.report, null);
  const badKey = await drive({endpoint: 'http://127.0.0.1:9', key: 'mg_live_secret', steps: []});
  assert.equal(badKey.code, 2);
  assert.match(badKey.stderr, /publishable key/);
});
