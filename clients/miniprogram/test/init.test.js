'use strict';
const test = require('node:test');
const assert = require('node:assert/strict');
const fs = require('node:fs');
const path = require('node:path');
const {createWx, createMy, KEY} = require('./support/platform.js');

const SOURCE = path.join(__dirname, '..', 'minigate.js');

/* A fresh copy of the module (its singleton included), with optional wx/my globals while it runs. */
function freshModule() {
  delete require.cache[require.resolve(SOURCE)];
  return require(SOURCE);
}

function withGlobals(globals, fn) {
  const saved = {};
  for (const name of Object.keys(globals)) {
    saved[name] = Object.getOwnPropertyDescriptor(globalThis, name);
    globalThis[name] = globals[name];
  }
  try {
    return fn();
  } finally {
    for (const name of Object.keys(globals)) {
      if (saved[name]) Object.defineProperty(globalThis, name, saved[name]);
      else delete globalThis[name];
    }
  }
}

test('init() refuses a secret API key and anything that is not a publishable key', () => {
  const minigate = freshModule();
  const api = createWx();
  for (const key of ['mg_test_51Hx', 'mg_live_51Hx', '', undefined]) {
    assert.throws(() => minigate.init({endpoint: 'https://pay.example.com', key, platform: 'wechat', api}),
      /publishable key/);
  }
  assert.throws(() => minigate.init({endpoint: 'pay.example.com', key: KEY, platform: 'wechat', api}), /endpoint/);
  assert.equal(minigate.getClient(), null);
});

test('init() detects wx, then my, from the globals', () => {
  const wx = createWx();
  const my = createMy();
  withGlobals({wx}, () => {
    const client = freshModule().createClient({endpoint: 'https://pay.example.com', key: KEY, autoTrack: false});
    assert.equal(client.platform, 'wechat');
    assert.equal(client.adapter.api, wx);
  });
  withGlobals({my}, () => {
    const client = freshModule().createClient({endpoint: 'https://pay.example.com', key: KEY, autoTrack: false});
    assert.equal(client.platform, 'alipay');
    assert.equal(client.adapter.api, my);
  });
  assert.throws(() => freshModule().createClient({endpoint: 'https://pay.example.com', key: KEY}), /neither wx nor my/);
});

test('init() sets a singleton that the module-level functions use', async () => {
  const minigate = freshModule();
  const wx = createWx();
  assert.equal(minigate.track('before_init'), false);
  await assert.rejects(minigate.pay({}), (e) => e.code === 'not_initialized');
  const client = minigate.init({endpoint: 'https://pay.example.com/', key: KEY, platform: 'wechat', api: wx,
    autoTrack: false});
  assert.equal(minigate.init({endpoint: 'https://other.example.com', key: KEY, platform: 'wechat', api: wx}), client);
  assert.equal(minigate.getClient(), client);
  minigate.identify('u_9');
  assert.equal(minigate.track('hello', {n: 1}), true);
  assert.equal(minigate.getDistinctId(), client.getDistinctId());
  await minigate.flush();
  const req = wx.network.requests[0];
  assert.equal(req.url, 'https://pay.example.com/v1/analytics/collect', 'trailing slash trimmed');
  assert.deepEqual(req.body.events.map((e) => [e.name, e.user_id]), [['hello', 'u_9']]);
  minigate.optOut();
  assert.equal(minigate.isOptedOut(), true);
});

test('init() with autoTrack wraps the global App and Page of the runtime', async () => {
  const wx = createWx();
  const registered = [];
  const App = (o) => registered.push(['app', o]);
  const Page = (o) => registered.push(['page', o]);
  await withGlobals({wx, App, Page}, async () => {
    const minigate = freshModule();
    const client = minigate.init({endpoint: 'https://pay.example.com', key: KEY});
    assert.notEqual(globalThis.App, App);
    assert.notEqual(globalThis.Page, Page);
    globalThis.Page({onShow() {}});
    const pageOptions = registered[0][1];
    pageOptions.onShow.call({route: 'pages/index/index'});
    await client.flush();
    client.cancelTimer();
    assert.deepEqual(wx.network.sentEvents().map((e) => [e.name, e.page]), [['$pageview', 'pages/index/index']]);
  });
});

test('the module-level wrapPage() works before init() and reports to the client created later', async () => {
  const minigate = freshModule();
  const options = minigate.wrapPage({});
  const wx = createWx();
  const client = minigate.init({endpoint: 'https://pay.example.com', key: KEY, platform: 'wechat', api: wx,
    autoTrack: false});
  options.onShow.call({route: 'pages/late/late'});
  await client.flush();
  assert.deepEqual(wx.network.sentEvents().map((e) => e.page), ['pages/late/late']);
});

test('the SDK source avoids syntax old mini-program engines lack', () => {
  const source = fs.readFileSync(SOURCE, 'utf8').replace(/\/\*[\s\S]*?\*\//g, '').replace(/\/\/.*$/gm, '');
  for (const [pattern, what] of [[/\?\./, 'optional chaining'], [/\?\?/, 'nullish coalescing'],
    [/=>/, 'arrow functions'], [/\bclass\s/, 'classes'], [/\b(let|const)\s/, 'let/const'], [/`/, 'template literals'],
    [/\basync\s|\bawait\s/, 'async/await'], [/\.\.\.[A-Za-z]/, 'spread'],
    [/^\s*(?!if\b|for\b|while\b|switch\b|catch\b|function\b)[A-Za-z_$][\w$]*\s*\([^)]*\)\s*\{/m, 'shorthand methods'],
    [/function\s*[\w$]*\s*\([^)]*=/, 'default parameters'],
    [/\.(includes|startsWith|endsWith|find|findIndex|padStart|repeat)\(|Object\.(assign|entries|values)\(/,
      'ES2015+ library calls']]) {
    assert.doesNotMatch(source, pattern, what);
  }
  assert.doesNotThrow(() => new Function(fs.readFileSync(SOURCE, 'utf8')));
});
