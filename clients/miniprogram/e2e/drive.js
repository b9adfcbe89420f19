#!/usr/bin/env node
'use strict';
/*
 * End-to-end driver: runs the SDK in Node against a real gateway, as a mini-program would.
 *
 *   node e2e/drive.js scenario.json
 *
 * scenario.json:
 *   {"endpoint": "http://127.0.0.1:8000", "key": "mg_pk_test_...",
 *    "platform"?: "wechat" (default) | "alipay",
 *    "backend_login_url"?: "...",   where {"do": "login"} posts {code, platform}; answers {"user_id": ...}
 *    "login_code"?: "...",          what the simulated wx.login / my.getAuthCode gives
 *    "pay_url"?: "...",             the sandbox payer: POSTed {"out_trade_no"} when a payment succeeds
 *    "batch_size"?: 20, "drain_timeout_ms"?: 15000, "device"?: "default",
 *    "steps": [
 *      {"do": "page", "path": "pages/index/index", "properties"?: {...}},
 *      {"do": "track", "name": "add_to_cart", "properties"?: {...}},
 *      {"do": "identify", "user_id": "u_1"},
 *      {"do": "login", "code"?: "...", "url"?: "..."},
 *      {"do": "pay", "order": {"id", "channel", "out_trade_no", "pay_params"}, "result": "success"|"cancel"|"fail",
 *       "out_trade_no"?: "..."},
 *      {"do": "flush"},
 *      {"do": "device", "name": "phone-2"},      a new simulated device: new storage, new distinct id
 *      {"do": "reset"}, {"do": "opt_out"}, {"do": "opt_in"}
 *    ]}
 *
 * The simulated platform keeps everything in memory and reaches the network with Node's fetch. At the end every
 * device's queue is drained (waiting for the SDK's own retries up to drain_timeout_ms) and one JSON line is
 * printed: {"sent": <events the gateway accepted>, "errors": [...], "distinct_ids": {<device>: <distinct id>}}.
 * Errors are SDK reports (rejected or dropped events), failed steps, payments whose outcome differs from
 * "result", and events left unsent. Exit status: 0 when there are no errors, 1 otherwise, 2 on bad usage.
 */
const fs = require('node:fs');
const minigate = require('../minigate.js');

const WECHAT_PAY_FIELDS = ['timeStamp', 'nonceStr', 'package', 'signType', 'paySign'];

function describe(err) {
  if (!err) return {code: 'error', message: 'unknown error'};
  const out = {code: err.code || 'error', message: err.message || String(err)};
  for (const key of ['status', 'event_id', 'event_name', 'event_ids']) if (err[key] !== undefined) out[key] = err[key];
  return out;
}

async function httpRequest({url, method, headers, data, timeout}) {
  const res = await fetch(url, {
    method: method || 'GET', headers: headers || {},
    body: data === undefined ? undefined : typeof data === 'string' ? data : JSON.stringify(data),
    signal: AbortSignal.timeout(timeout || 15000),
  });
  const text = await res.text();
  let body = text;
  try {
    body = JSON.parse(text);
  } catch (e) {
    // not JSON: handed over as text, as the platforms do
  }
  return {status: res.status, body, headers: Object.fromEntries(res.headers)};
}

async function sandboxPay(scenario, outTradeNo) {
  if (!scenario.pay_url) return null;
  if (!outTradeNo) return 'the order has no out_trade_no for the sandbox payer';
  const res = await httpRequest({url: scenario.pay_url, method: 'POST',
    headers: {'Content-Type': 'application/json'}, data: {out_trade_no: outTradeNo}});
  return res.status >= 200 && res.status < 300 ? null : 'sandbox pay answered HTTP ' + res.status;
}

/*
 * A simulated wx (or my) whose request goes over real HTTP. `payment` holds what the next requestPayment /
 * tradePay should do: {result, outTradeNo}.
 */
function createPlatform(platform, scenario, state) {
  const storage = new Map();
  const copy = (v) => (v === undefined ? undefined : JSON.parse(JSON.stringify(v)));
  const common = {
    getSystemInfoSync: () => ({brand: 'minigate', model: 'e2e-driver', system: process.platform,
      version: '8.0.0', SDKVersion: '3.0.0'}),
  };
  if (platform === 'wechat') {
    return Object.assign(common, {
      request(o) {
        httpRequest({url: o.url, method: o.method, headers: o.header, data: o.data, timeout: o.timeout}).then(
          (res) => o.success && o.success({statusCode: res.status, data: res.body, header: res.headers}),
          (err) => o.fail && o.fail({errMsg: 'request:fail ' + err.message}));
      },
      getStorageSync: (key) => (storage.has(key) ? copy(storage.get(key)) : ''),
      setStorageSync: (key, value) => { storage.set(key, copy(value)); },
      login(o) {
        const code = state.loginCode;
        setImmediate(() => (code ? o.success({code, errMsg: 'login:ok'})
          : o.fail({errMsg: 'login:fail the scenario has no login_code'})));
      },
      requestPayment(o) {
        const missing = WECHAT_PAY_FIELDS.filter((f) => typeof o[f] !== 'string' || !o[f]);
        const extra = Object.keys(o).filter((k) => typeof o[k] !== 'function' && !WECHAT_PAY_FIELDS.includes(k));
        const {result, outTradeNo} = state.payment;
        (async () => {
          if (missing.length || extra.length) {
            return o.fail({errMsg: 'requestPayment:fail parameter error: missing ' + missing.join(',') +
              ' extra ' + extra.join(',')});
          }
          if (result === 'cancel') return o.fail({errMsg: 'requestPayment:fail cancel'});
          if (result !== 'success') return o.fail({errMsg: 'requestPayment:fail ' + result});
          const problem = await sandboxPay(scenario, outTradeNo);
          if (problem) return o.fail({errMsg: 'requestPayment:fail ' + problem});
          return o.success({errMsg: 'requestPayment:ok'});
        })().catch((err) => o.fail({errMsg: 'requestPayment:fail ' + err.message}));
      },
    });
  }
  return Object.assign(common, {
    SDKVersion: '2.8.10',
    request(o) {
      httpRequest({url: o.url, method: o.method, headers: o.headers, data: o.data, timeout: o.timeout}).then(
        (res) => {
          if (res.status >= 400) {
            o.fail && o.fail({error: 19, errorMessage: 'http status error', status: res.status, data: res.body,
              headers: res.headers});
          } else {
            o.success && o.success({status: res.status, data: res.body, headers: res.headers});
          }
        },
        (err) => o.fail && o.fail({error: 12, errorMessage: err.message}));
    },
    getStorageSync: ({key}) => ({data: storage.has(key) ? copy(storage.get(key)) : null}),
    setStorageSync: ({key, data}) => { storage.set(key, copy(data)); },
    getAuthCode(o) {
      const code = state.loginCode;
      setImmediate(() => (code && o.scopes === 'auth_base' ? o.success({authCode: code})
        : o.fail({error: 11, errorMessage: 'no login_code or wrong scopes'})));
    },
    tradePay(o) {
      const {result, outTradeNo} = state.payment;
      (async () => {
        if (result === 'cancel') return o.success({resultCode: '6001'});
        if (result !== 'success') return o.success({resultCode: '4000'});
        const problem = await sandboxPay(scenario, outTradeNo);
        return o.success({resultCode: problem ? '4000' : '9000', memo: problem || ''});
      })().catch(() => o.success({resultCode: '4000'}));
    },
  });
}

const sleep = (ms) => new Promise((resolve) => setTimeout(resolve, ms));

/* Flushes, then waits for the SDK's own retries until the queue is empty or the deadline passes. */
async function drain(client, timeoutMs) {
  const deadline = Date.now() + timeoutMs;
  await client.flush();
  while (client.getStats().queued > 0 && Date.now() < deadline) {
    await sleep(Math.min(200, Math.max(1, deadline - Date.now())));
    await client.flush();
  }
}

async function run(scenario) {
  const platform = scenario.platform || 'wechat';
  if (platform !== 'wechat' && platform !== 'alipay') throw new Error('platform must be wechat or alipay');
  const drainTimeout = scenario.drain_timeout_ms || 15000;
  const errors = [];
  const devices = [];
  const distinctIds = {};
  const state = {loginCode: scenario.login_code, payment: {result: 'success'}};
  let device = null;

  function openDevice(name) {
    const api = createPlatform(platform, scenario, state);
    const client = minigate.createClient({
      endpoint: scenario.endpoint, key: scenario.key, platform, api, autoTrack: false,
      batchSize: scenario.batch_size || 20,
      setTimeout: (fn, ms) => { const t = setTimeout(fn, ms); t.unref(); return t; },
      clearTimeout: (t) => clearTimeout(t),
      onError: (err) => errors.push(Object.assign({device: name}, describe(err))),
    });
    device = {name, client};
    devices.push(device);
    distinctIds[name] = client.getDistinctId();
  }

  openDevice(scenario.device || 'default');
  const steps = Array.isArray(scenario.steps) ? scenario.steps : [];
  for (let i = 0; i < steps.length; i++) {
    const step = steps[i] || {};
    const fail = (err) => errors.push(Object.assign({step: i, do: step.do, device: device.name}, describe(err)));
    const client = device.client;
    try {
      switch (step.do) {
        case 'page':
          if (!client.page(step.path, step.properties)) fail({code: 'not_tracked', message: 'page view not queued'});
          break;
        case 'track':
          if (!client.track(step.name, step.properties)) fail({code: 'not_tracked', message: 'event not queued'});
          break;
        case 'identify':
          client.identify(step.user_id);
          break;
        case 'login': {
          if (step.code) state.loginCode = step.code;
          const url = step.url || scenario.backend_login_url;
          if (!url) throw Object.assign(new Error('no backend_login_url in the scenario'), {code: 'bad_scenario'});
          await client.login({url});
          break;
        }
        case 'pay': {
          const order = step.order || {};
          const result = step.result || 'success';
          state.payment = {result, outTradeNo: step.out_trade_no || order.out_trade_no};
          const outcome = await client.pay(order);
          if (outcome.status !== result) {
            fail({code: 'payment_' + outcome.status, message: 'expected ' + result + ', got ' + outcome.status +
              (outcome.error ? ' (' + outcome.error + ')' : '')});
          }
          break;
        }
        case 'flush':
          await drain(client, drainTimeout);
          break;
        case 'device':
          await drain(client, drainTimeout);
          openDevice(step.name || 'device' + devices.length);
          break;
        case 'reset':
          client.reset();
          distinctIds[device.name] = client.getDistinctId();
          break;
        case 'opt_out':
          client.optOut();
          break;
        case 'opt_in':
          client.optIn();
          break;
        default:
          throw Object.assign(new Error('unknown step: ' + JSON.stringify(step.do)), {code: 'bad_scenario'});
      }
    } catch (err) {
      fail(err);
    }
  }

  let sent = 0;
  for (const d of devices) {
    await drain(d.client, drainTimeout);
    const stats = d.client.getStats();
    sent += stats.sent;
    if (stats.queued) errors.push({device: d.name, code: 'unsent', message: stats.queued + ' event(s) still queued'});
  }
  return {sent, errors, distinct_ids: distinctIds};
}

async function main(argv) {
  if (argv.length !== 1) {
    process.stderr.write('usage: node e2e/drive.js <scenario.json>\n');
    return 2;
  }
  let scenario;
  try {
    scenario = JSON.parse(fs.readFileSync(argv[0], 'utf8'));
  } catch (err) {
    process.stderr.write('cannot read scenario: ' + err.message + '\n');
    return 2;
  }
  let report;
  try {
    report = await run(scenario);
  } catch (err) {
    process.stderr.write('bad scenario: ' + err.message + '\n');
    return 2;
  }
  process.stdout.write(JSON.stringify(report) + '\n');
  return report.errors.length ? 1 : 0;
}

if (require.main === module) {
  main(process.argv.slice(2)).then((code) => { process.exitCode = code; });
}

module.exports = {run};
