'use strict';
/*
 * Simulated mini-program platforms for the SDK tests: a fake clock, `wx` (WeChat) and `my` (Alipay) objects with
 * in-memory storage and scripted network answers, and a host with the global App/Page constructors.
 *
 * The simulations keep the platform differences the SDK must get right: wx.request honours only `header` and
 * answers every HTTP status through `success` with `statusCode`; my.request honours only `headers`, answers 2xx
 * through `success` with `status`, and HTTP errors through `fail` (error 19, with status/data/headers); storage
 * values are copied on write (both platforms serialise them); WeChat's getStorageSync answers '' for a missing
 * key, Alipay's {data: null}.
 *
 * Run directly (node --test runs every file under test/), this file checks the simulations themselves.
 */

const START = Date.UTC(2025, 0, 15, 8, 0, 0);

/* Lets pending promise callbacks and simulated deliveries run. */
async function settle(rounds = 20) {
  for (let i = 0; i < rounds; i++) await new Promise((resolve) => setImmediate(resolve));
}

function createClock(start = START) {
  let now = start;
  let seq = 0;
  let timers = [];
  const clock = {
    now: () => now,
    setTimeout(fn, ms) {
      const timer = {id: ++seq, at: now + Math.max(0, Number(ms) || 0), fn};
      timers.push(timer);
      return timer.id;
    },
    clearTimeout(id) {
      timers = timers.filter((t) => t.id !== id);
    },
    /* delays (ms from now) of the pending timers, soonest first */
    pending() {
      return timers.map((t) => t.at - now).sort((a, b) => a - b);
    },
    /* moves time forward, firing due timers in order and letting their work settle */
    async advance(ms) {
      const end = now + ms;
      for (;;) {
        await settle();
        const due = timers.filter((t) => t.at <= end).sort((a, b) => a.at - b.at || a.id - b.id)[0];
        if (!due) break;
        timers = timers.filter((t) => t !== due);
        now = due.at;
        due.fn();
      }
      now = end;
      await settle();
    },
  };
  return clock;
}

const clone = (value) => (value === undefined ? undefined : JSON.parse(JSON.stringify(value)));

function parseBody(data) {
  if (typeof data !== 'string') return data;
  try {
    return JSON.parse(data);
  } catch (e) {
    return data;
  }
}

/* Default answer of the simulated gateway: every event accepted. */
function acceptAll(req) {
  const events = req.body && Array.isArray(req.body.events) ? req.body.events : [];
  return {status: 200, body: {accepted: events.length, rejected: []}};
}

/*
 * Scripted network shared by both platforms. `script(...answers)` queues answers, used in order; when the queue
 * is empty `handler(req)` answers. An answer is {status, body, headers, delay?} or {network: 'message', delay?};
 * `delay` (ms) is measured on the fake clock.
 */
function createNetwork(clock) {
  const net = {
    requests: [],
    queue: [],
    handler: acceptAll,
    inFlight: 0,
    maxInFlight: 0,
    script(...answers) {
      net.queue.push(...answers);
    },
    /* the requests that carried analytics batches */
    batches() {
      return net.requests.filter((r) => r.url.endsWith('/v1/analytics/collect'));
    },
    /* every event sent, in order (retries included) */
    sentEvents() {
      return net.batches().flatMap((r) => r.body.events);
    },
    dispatch(req, deliver) {
      net.requests.push(req);
      const answer = net.queue.length ? net.queue.shift() : net.handler(req);
      net.inFlight++;
      net.maxInFlight = Math.max(net.maxInFlight, net.inFlight);
      const finish = () => {
        net.inFlight--;
        deliver(answer);
      };
      if (answer.delay && clock) clock.setTimeout(finish, answer.delay);
      else Promise.resolve().then(finish);
    },
  };
  return net;
}

function createStorage() {
  return new Map();
}

function createWx({clock, storage = createStorage(), network = createNetwork(clock), loginCodes = []} = {}) {
  const wx = {
    storage,
    network,
    loginCalls: 0,
    loginCodes: [...loginCodes],
    loginError: null,
    paymentCalls: [],
    paymentOutcome: 'success',
    request(o) {
      const req = {url: o.url, method: o.method, headers: o.header || {}, raw: o.data, body: parseBody(o.data),
        options: o};
      network.dispatch(req, (answer) => {
        if (answer.network) {
          o.fail && o.fail({errMsg: 'request:fail ' + answer.network});
          return;
        }
        o.success && o.success({statusCode: answer.status, data: clone(answer.body), header: answer.headers || {},
          errMsg: 'request:ok'});
      });
      return {abort() {}};
    },
    getStorageSync(key) {
      return storage.has(key) ? clone(storage.get(key)) : '';
    },
    setStorageSync(key, value) {
      storage.set(key, clone(value));
    },
    getSystemInfoSync() {
      return {brand: 'Apple', model: 'iPhone 13', system: 'iOS 16.1', version: '8.0.40', SDKVersion: '3.0.0',
        platform: 'ios', pixelRatio: 3, windowWidth: 390, language: 'zh_CN'};
    },
    login(o) {
      wx.loginCalls++;
      Promise.resolve().then(() => {
        if (wx.loginError) o.fail && o.fail({errMsg: 'login:fail ' + wx.loginError});
        else o.success({code: wx.loginCodes.length ? wx.loginCodes.shift() : 'wxcode-' + wx.loginCalls,
          errMsg: 'login:ok'});
      });
    },
    requestPayment(o) {
      const params = {};
      for (const key of Object.keys(o)) if (typeof o[key] !== 'function') params[key] = o[key];
      wx.paymentCalls.push(params);
      Promise.resolve().then(() => {
        if (wx.paymentOutcome === 'success') o.success({errMsg: 'requestPayment:ok'});
        else if (wx.paymentOutcome === 'cancel') o.fail({errMsg: 'requestPayment:fail cancel'});
        else o.fail({errMsg: 'requestPayment:fail ' + wx.paymentOutcome});
      });
    },
  };
  return wx;
}

function createMy({clock, storage = createStorage(), network = createNetwork(clock), authCodes = []} = {}) {
  const my = {
    storage,
    network,
    SDKVersion: '2.8.10',
    authCalls: [],
    authCodes: [...authCodes],
    tradePayCalls: [],
    tradePayResult: {resultCode: '9000'},
    request(o) {
      const req = {url: o.url, method: o.method, headers: o.headers || {}, raw: o.data, body: parseBody(o.data),
        options: o};
      network.dispatch(req, (answer) => {
        if (answer.network) {
          o.fail && o.fail({error: 12, errorMessage: answer.network});
        } else if (answer.status >= 400) {
          o.fail && o.fail({error: 19, errorMessage: 'http status error', status: answer.status,
            data: clone(answer.body), headers: answer.headers || {}});
        } else {
          o.success && o.success({status: answer.status, data: clone(answer.body), headers: answer.headers || {}});
        }
      });
      return {abort() {}};
    },
    getStorageSync({key}) {
      return {data: storage.has(key) ? clone(storage.get(key)) : null};
    },
    setStorageSync({key, data}) {
      storage.set(key, clone(data));
      return {success: true};
    },
    getSystemInfoSync() {
      return {brand: 'HUAWEI', model: 'NOH-AN00', system: '10', version: '10.5.36', platform: 'Android',
        pixelRatio: 3, language: 'zh-Hans'};
    },
    getAuthCode(o) {
      my.authCalls.push({scopes: o.scopes});
      Promise.resolve().then(() => {
        o.success({authCode: my.authCodes.length ? my.authCodes.shift() : 'alicode-' + my.authCalls.length});
      });
    },
    tradePay(o) {
      const params = {};
      for (const key of Object.keys(o)) if (typeof o[key] !== 'function') params[key] = o[key];
      my.tradePayCalls.push(params);
      Promise.resolve().then(() => o.success(clone(my.tradePayResult)));
    },
  };
  return my;
}

/* The globals a mini-program runtime provides: App, Page, getCurrentPages; plus drivers for their lifecycle. */
function createHost() {
  const host = {
    apps: [],
    pages: {},
    stack: [],
    App(options) {
      host.apps.push(options);
    },
    Page(options) {
      host.pages[options.__route] = options;
    },
    getCurrentPages() {
      return host.stack.slice();
    },
    /* registers a page's options the way the runtime would when loading pages/<route>.js */
    definePage(route, options) {
      host.Page(Object.assign({__route: route}, options));
    },
    /* shows a page: creates its instance (with `route`) and calls onShow on it */
    showPage(route) {
      const options = host.pages[route];
      const instance = Object.assign({}, options, {route});
      host.stack.push(instance);
      if (typeof options.onShow === 'function') options.onShow.call(instance);
      return instance;
    },
    app(name, ...args) {
      const options = host.apps[host.apps.length - 1];
      if (typeof options[name] === 'function') return options[name].apply(options, args);
      return undefined;
    },
  };
  return host;
}

const ENDPOINT = 'https://pay.example.com';
const KEY = 'mg_pk_test_4eC39HqLyjWDarjtT1zdp7dc';

/*
 * One client over simulated parts. `platform` is 'wechat' (default) or 'alipay'; pass `storage` (and `network`)
 * from an earlier setup to simulate a restart of the same device; other options go to createClient.
 */
function setup({platform = 'wechat', storage, network, clock, host, ...options} = {}) {
  const minigate = require('../../minigate.js');
  clock = clock || createClock();
  const api = platform === 'wechat' ? createWx({clock, storage, network}) : createMy({clock, storage, network});
  const errors = [];
  const client = minigate.createClient({
    endpoint: ENDPOINT, key: KEY, platform, api, autoTrack: false, globals: host,
    now: clock.now, setTimeout: clock.setTimeout, clearTimeout: clock.clearTimeout, random: () => 0,
    onError: (err) => errors.push(err),
    ...options,
  });
  return {client, clock, api, net: api.network, storage: api.storage, errors, host};
}

module.exports = {START, ENDPOINT, KEY, settle, createClock, createNetwork, createStorage, createWx, createMy,
  createHost, setup};

if (require.main === module) {
  const test = require('node:test');
  const assert = require('node:assert/strict');

  test('fake clock fires due timers in order and not before', async () => {
    const clock = createClock(1000);
    const fired = [];
    clock.setTimeout(() => fired.push('b'), 20);
    clock.setTimeout(() => fired.push('a'), 10);
    const c = clock.setTimeout(() => fired.push('c'), 15);
    clock.clearTimeout(c);
    await clock.advance(15);
    assert.deepEqual(fired, ['a']);
    assert.equal(clock.now(), 1015);
    await clock.advance(5);
    assert.deepEqual(fired, ['a', 'b']);
  });

  test('wx storage copies values and answers empty string for missing keys', () => {
    const wx = createWx();
    assert.equal(wx.getStorageSync('nope'), '');
    const value = {a: [1]};
    wx.setStorageSync('k', value);
    value.a.push(2);
    assert.deepEqual(wx.getStorageSync('k'), {a: [1]});
  });

  test('wx.request ignores `headers` and answers errors through success', async () => {
    const wx = createWx();
    wx.network.script({status: 500, body: {error: {code: 'x'}}});
    let got;
    wx.request({url: 'https://h/x', method: 'POST', headers: {A: '1'}, data: '{}', success: (r) => { got = r; }});
    await settle();
    assert.equal(got.statusCode, 500);
    assert.deepEqual(wx.network.requests[0].headers, {});
  });

  test('my.request ignores `header`, answers HTTP errors through fail with status', async () => {
    const my = createMy();
    my.network.script({status: 429, body: {}, headers: {'Retry-After': '3'}}, {network: 'offline'});
    const fails = [];
    const o = {url: 'https://h/x', method: 'POST', header: {A: '1'}, data: '{}', fail: (r) => fails.push(r)};
    my.request(o);
    my.request(o);
    await settle();
    assert.equal(fails[0].error, 19);
    assert.equal(fails[0].status, 429);
    assert.equal(fails[1].error, 12);
    assert.equal(fails[1].status, undefined);
    assert.deepEqual(my.network.requests[0].headers, {});
    assert.deepEqual(my.getStorageSync({key: 'nope'}), {data: null});
  });

  test('delayed answers wait for the fake clock', async () => {
    const clock = createClock();
    const wx = createWx({clock});
    wx.network.script({status: 200, body: {}, delay: 1000});
    let done = false;
    wx.request({url: 'https://h/x', success: () => { done = true; }});
    await clock.advance(999);
    assert.equal(done, false);
    assert.equal(wx.network.inFlight, 1);
    await clock.advance(1);
    assert.equal(done, true);
  });
}
