'use strict';
const test = require('node:test');
const assert = require('node:assert/strict');
const {setup, createHost, settle} = require('./support/platform.js');

function app(options = {}) {
  const host = createHost();
  const env = setup({host, autoTrack: true, batchSize: 100, ...options});
  return {...env, host};
}

test('every page onShow through the wrapped Page emits $pageview with the route', async () => {
  const {client, host, net} = app();
  const shown = [];
  host.definePage('pages/index/index', {data: {a: 1}, onShow() { shown.push(this.route); }, tap() { return 'tap'; }});
  host.definePage('pages/goods/detail', {});
  const index = host.showPage('pages/index/index');
  host.showPage('pages/goods/detail');
  host.showPage('pages/index/index');
  assert.deepEqual(shown, ['pages/index/index', 'pages/index/index'], 'the page\'s own onShow still runs');
  assert.equal(index.tap(), 'tap', 'other page methods are kept');
  assert.deepEqual(index.data, {a: 1});
  await client.flush();
  const views = net.sentEvents();
  assert.deepEqual(views.map((e) => [e.type, e.name, e.page]), [
    ['page_view', '$pageview', 'pages/index/index'],
    ['page_view', '$pageview', 'pages/goods/detail'],
    ['page_view', '$pageview', 'pages/index/index'],
  ]);
});

test('app onLaunch/onShow/onHide emit lifecycle events; onHide flushes at once', async () => {
  const {client, host, net} = app({flushInterval: 600000});
  const calls = [];
  host.App({
    globalData: {},
    onLaunch(opts) { calls.push(['launch', opts.scene, this.globalData !== undefined]); },
    onHide() { calls.push(['hide']); },
  });
  host.app('onLaunch', {scene: 1001, path: 'pages/index/index', query: {phone: '13800138000'}});
  host.app('onShow', {scene: 1001, path: 'pages/index/index', query: {}});
  client.track('something');
  await settle();
  assert.equal(net.requests.length, 0, 'nothing sent before hide (long flushInterval, big batch)');
  host.app('onHide');
  await settle();
  assert.deepEqual(calls, [['launch', 1001, true], ['hide']], 'the app\'s own hooks run with its `this`');
  assert.equal(net.requests.length, 1, 'onHide flushed');
  const events = net.sentEvents();
  assert.deepEqual(events.map((e) => [e.type, e.name]), [
    ['lifecycle', '$app_launch'], ['lifecycle', '$app_show'], ['event', 'something'], ['lifecycle', '$app_hide'],
  ]);
  assert.deepEqual(events[0].properties, {scene: 1001, path: 'pages/index/index'}, 'the launch query is not sent');
  assert.equal(client.getStats().queued, 0);
});

test('app launch starts a new session even within 30 minutes', async () => {
  const {client, host, net} = app();
  host.App({});
  client.track('before');
  host.app('onLaunch', {scene: 1001});
  host.app('onShow', {scene: 1001});
  await client.flush();
  const [before, launch, show] = net.sentEvents();
  assert.notEqual(before.session_id, launch.session_id);
  assert.equal(launch.session_id, show.session_id);
});

test('explicit wrapPage/wrapApp with autoTrack on does not count twice', async () => {
  const {client, host, net} = app();
  host.definePage('pages/me/me', client.wrapPage({}));
  host.App(client.wrapApp({}));
  host.showPage('pages/me/me');
  host.app('onShow', {scene: 1001});
  await client.flush();
  assert.deepEqual(net.sentEvents().map((e) => e.name), ['$pageview', '$app_show']);
});

test('without autoTrack, App and Page are left alone and wrapPage() works on its own', async () => {
  const host = createHost();
  const originalPage = host.Page;
  const {client, net} = setup({host, autoTrack: false});
  assert.equal(host.Page, originalPage);
  host.definePage('pages/plain/plain', {});
  host.definePage('pages/wrapped/wrapped', client.wrapPage({}));
  host.showPage('pages/plain/plain');
  host.showPage('pages/wrapped/wrapped');
  await client.flush();
  assert.deepEqual(net.sentEvents().map((e) => e.page), ['pages/wrapped/wrapped']);
});

test('page() without a path takes the route of the top page from getCurrentPages()', async () => {
  const {client, host, net} = app({autoTrack: false});
  host.definePage('pages/cart/cart', {});
  host.showPage('pages/cart/cart');
  client.page({source: 'manual'});
  await client.flush();
  const [view] = net.sentEvents();
  assert.equal(view.page, 'pages/cart/cart');
  assert.deepEqual(view.properties, {source: 'manual'});
});

test('an exception in tracking never breaks the page', () => {
  const {client, host} = app();
  client.enqueue = () => { throw new Error('broken'); };
  let ran = false;
  host.definePage('pages/x/x', {onShow() { ran = true; }});
  host.showPage('pages/x/x');
  assert.equal(ran, true);
});
