/*
 * minigate mini-program SDK (WeChat and Alipay mini-programs), version 0.1.0.
 *
 * One file, no dependencies, no build step: copy it into the mini-program and `require` it from app.js.
 * Written in ES5 syntax (plus Promise), because mini-program runtimes include old JavaScript engines.
 *
 * Wire protocol (what this file sends; the gateway implements the other side):
 *
 *   POST {endpoint}/v1/analytics/collect
 *   Content-Type: application/json
 *   Authorization: Bearer <publishable key, mg_pk_test_... or mg_pk_live_...>
 *
 *   {"sent_at": <client epoch ms at send time>,
 *    "context": {"platform": "wechat"|"alipay", "sdk": "minigate-miniprogram/0.1.0", "app_version"?: "...",
 *                "system"?: {"brand", "model", "system", "version", "SDKVersion"}},
 *    "events": [{"id", "type": "event"|"page_view"|"lifecycle", "name", "ts", "distinct_id", "user_id"?,
 *                "session_id", "page"?, "properties": {<string> -> string|number|boolean}}]}
 *
 * Answers: 2xx {"accepted": n, "rejected": [{"index", "id", "code", "message"}]} acknowledges the whole batch
 * (rejected events can never succeed, so they are reported through onError and not retried); network failures,
 * 408, 429 (Retry-After honoured) and 5xx keep the batch and retry it later with the same event ids, so the
 * gateway deduplicates a batch whose answer was lost; any other answer drops the batch and reports it.
 *
 * The publishable key can only write analytics events; the secret API key (mg_test_... / mg_live_...) must never
 * be shipped in a mini-program, and init() refuses it.
 */
'use strict';

var VERSION = '0.1.0';
var SDK = 'minigate-miniprogram/' + VERSION;

var NAME_RE = /^[$A-Za-z][A-Za-z0-9_.:$-]{0,99}$/;
var MAX_BATCH = 100;            // the gateway takes up to 500 events per request; smaller batches fail smaller
var MAX_PROPERTIES = 50;
var MAX_KEY_LENGTH = 100;
var MAX_VALUE_LENGTH = 1000;
var MAX_USER_ID_LENGTH = 255;
var BACKOFF_BASE_MS = 1000;
var BACKOFF_CAP_MS = 5 * 60 * 1000;
var RETRY_AFTER_CAP_MS = 24 * 60 * 60 * 1000;
var SYSTEM_KEYS = ['brand', 'model', 'system', 'version', 'SDKVersion'];

function noop() {}

function isObject(value) {
  return value !== null && typeof value === 'object' && !Array.isArray(value);
}

function has(obj, key) {
  return Object.prototype.hasOwnProperty.call(obj, key);
}

function assign(target, source) {
  if (source) {
    for (var key in source) {
      if (has(source, key)) target[key] = source[key];
    }
  }
  return target;
}

function numberOption(value, fallback, min, max) {
  var n = typeof value === 'number' && !isNaN(value) ? value : fallback;
  if (n < min) n = min;
  if (n > max) n = max;
  return n;
}

function parseJson(value) {
  if (typeof value !== 'string') return value;
  try {
    return JSON.parse(value);
  } catch (e) {
    return value;
  }
}

function headerValue(headers, name) {
  if (!headers) return undefined;
  var wanted = name.toLowerCase();
  for (var key in headers) {
    if (has(headers, key) && key.toLowerCase() === wanted) return headers[key];
  }
  return undefined;
}

/* ---------------------------------------------------------------- random ids */

function toHex(bytes) {
  var out = '';
  for (var i = 0; i < bytes.length; i++) {
    var h = (bytes[i] & 255).toString(16);
    out += h.length === 1 ? '0' + h : h;
  }
  return out;
}

/*
 * Ids need 128 random bits. A CSPRNG is used when the runtime has one: an injected `randomBytes(n)`, a global
 * `crypto.getRandomValues`, or a pool refilled asynchronously from `wx.getRandomValues` (not present in every
 * base library, and asynchronous only). Math.random is the fallback; a collision there would only merge two
 * analytics events, never anything that involves money.
 */
function createRandomSource(options, api) {
  if (typeof options.randomBytes === 'function') return options.randomBytes;
  var cryptoObj = typeof crypto !== 'undefined' ? crypto : null;
  if (cryptoObj && typeof cryptoObj.getRandomValues === 'function' && typeof Uint8Array !== 'undefined') {
    return function (n) {
      var buf = new Uint8Array(n);
      cryptoObj.getRandomValues(buf);
      return buf;
    };
  }
  var pool = [];
  var refilling = false;
  function refill() {
    if (refilling || !api || typeof api.getRandomValues !== 'function') return;
    refilling = true;
    try {
      api.getRandomValues({
        length: 256,
        success: function (res) {
          refilling = false;
          var bytes = res && res.randomValues ? new Uint8Array(res.randomValues) : [];
          for (var i = 0; i < bytes.length; i++) pool.push(bytes[i]);
        },
        fail: function () { refilling = false; }
      });
    } catch (e) {
      refilling = false;
    }
  }
  refill();
  return function (n) {
    var out = [];
    if (pool.length >= n) {
      out = pool.splice(0, n);
    } else {
      for (var i = 0; i < n; i++) out.push(Math.floor(Math.random() * 256));
    }
    if (pool.length < 64) refill();
    return out;
  };
}

/* FNV-1a, 32 bits: a stable, uniform value in [0, 1) per distinct id, for sampling. */
function unitHash(text) {
  var h = 0x811c9dc5;
  for (var i = 0; i < text.length; i++) {
    h ^= text.charCodeAt(i);
    h += (h << 1) + (h << 4) + (h << 7) + (h << 8) + (h << 24);
    h = h >>> 0;
  }
  return h / 4294967296;
}

/* ---------------------------------------------------------------- platforms */

/*
 * The two platforms differ in small ways that matter: Alipay's my.request takes `headers` and answers
 * `res.status` (and calls `fail` with error 19 plus status/data/headers for HTTP errors in recent base
 * libraries), WeChat's wx.request takes `header` and answers `res.statusCode` through `success` for every
 * status; storage and login differ in shape. The adapter gives the client one interface over both.
 */
function createAdapter(platform, api) {
  function call(method, params) {
    return new Promise(function (resolve, reject) {
      if (typeof api[method] !== 'function') {
        reject(sdkError('unsupported', platform + ' has no ' + method + '()'));
        return;
      }
      params.success = resolve;
      params.fail = reject;
      api[method](params);
    });
  }

  var adapter = {platform: platform, api: api};

  if (platform === 'wechat') {
    adapter.request = function (req) {
      return new Promise(function (resolve, reject) {
        api.request({
          url: req.url, method: req.method, data: req.data, header: req.headers, timeout: req.timeout,
          dataType: 'json',
          success: function (res) {
            resolve({status: res.statusCode, data: parseJson(res.data), headers: res.header || {}});
          },
          fail: function (err) {
            reject(sdkError('network_error', (err && err.errMsg) || 'request:fail'));
          }
        });
      });
    };
    adapter.getItem = function (key) {
      var value = api.getStorageSync(key);
      return value === '' ? undefined : value;
    };
    adapter.setItem = function (key, value) { api.setStorageSync(key, value); };
    adapter.loginCode = function () {
      return call('login', {}).then(function (res) { return res.code; });
    };
  } else {
    adapter.request = function (req) {
      return new Promise(function (resolve, reject) {
        api.request({
          url: req.url, method: req.method, data: req.data, headers: req.headers, timeout: req.timeout,
          dataType: 'json',
          success: function (res) {
            resolve({status: res.status, data: parseJson(res.data), headers: res.headers || {}});
          },
          fail: function (err) {
            if (err && typeof err.status === 'number' && err.status >= 100) {
              resolve({status: err.status, data: parseJson(err.data), headers: err.headers || {}});
            } else {
              var message = err ? (err.errorMessage || err.errorMsg || 'error ' + err.error) : 'request failed';
              reject(sdkError('network_error', 'my.request: ' + message));
            }
          }
        });
      });
    };
    adapter.getItem = function (key) {
      var res = api.getStorageSync({key: key});
      return res && res.data !== null && res.data !== '' ? res.data : undefined;
    };
    adapter.setItem = function (key, value) { api.setStorageSync({key: key, data: value}); };
    adapter.loginCode = function () {
      return call('getAuthCode', {scopes: 'auth_base'}).then(function (res) { return res.authCode; });
    };
  }

  /*
   * brand, model, system, version, SDKVersion. Newer WeChat base libraries deprecate getSystemInfoSync in favour
   * of getDeviceInfo (brand, model, system) and getAppBaseInfo (version, SDKVersion): those are used when present.
   */
  adapter.systemInfo = function () {
    var info = null;
    if (typeof api.getDeviceInfo === 'function' && typeof api.getAppBaseInfo === 'function') {
      info = assign(assign({}, api.getDeviceInfo()), api.getAppBaseInfo());
    } else if (typeof api.getSystemInfoSync === 'function') {
      info = api.getSystemInfoSync();
    }
    var out = {};
    var found = false;
    for (var i = 0; i < SYSTEM_KEYS.length; i++) {
      var key = SYSTEM_KEYS[i];
      var value = info ? info[key] : undefined;
      if (key === 'SDKVersion' && value === undefined) value = api.SDKVersion;
      if (typeof value === 'string' && value) {
        out[key] = value.slice(0, 100);
        found = true;
      }
    }
    return found ? out : undefined;
  };

  adapter.appVersion = function () {
    if (typeof api.getAccountInfoSync !== 'function') return undefined;
    var info = api.getAccountInfoSync();
    var version = info && info.miniProgram ? info.miniProgram.version : undefined;
    return typeof version === 'string' && version ? version : undefined;
  };

  /* WeChat: the five fields of wx.requestPayment; `fail` with "cancel" in errMsg is the payer closing it. */
  adapter.payWechat = function (params) {
    return new Promise(function (resolve) {
      if (platform !== 'wechat' || typeof api.requestPayment !== 'function') {
        resolve({status: 'fail', error: 'wx.requestPayment is not available'});
        return;
      }
      api.requestPayment({
        timeStamp: params.timeStamp, nonceStr: params.nonceStr, package: params['package'],
        signType: params.signType, paySign: params.paySign,
        success: function () { resolve({status: 'success'}); },
        fail: function (err) {
          var message = (err && err.errMsg) || 'requestPayment:fail';
          resolve(message.indexOf('cancel') >= 0 ? {status: 'cancel'} : {status: 'fail', error: message});
        }
      });
    });
  };

  /* Alipay: resultCode 9000 paid, 6001 cancelled, 8000/6004 still processing (unknown), anything else failed. */
  adapter.payAlipay = function (tradeNO) {
    return new Promise(function (resolve) {
      if (platform !== 'alipay' || typeof api.tradePay !== 'function') {
        resolve({status: 'fail', error: 'my.tradePay is not available'});
        return;
      }
      api.tradePay({
        tradeNO: tradeNO,
        success: function (res) {
          var code = res ? String(res.resultCode) : '';
          if (code === '9000') resolve({status: 'success'});
          else if (code === '6001') resolve({status: 'cancel'});
          else if (code === '8000' || code === '6004') resolve({status: 'unknown', error: code});
          else resolve({status: 'fail', error: code || 'tradePay failed'});
        },
        fail: function (err) {
          var message = err ? (err.errorMessage || err.errorMsg || 'error ' + (err.error || err.resultCode)) : '';
          resolve({status: 'fail', error: message || 'tradePay failed'});
        }
      });
    });
  };

  return adapter;
}

function detectPlatform(options) {
  var platform = options.platform;
  var api = options.api;
  if (platform && platform !== 'wechat' && platform !== 'alipay') {
    throw new Error('minigate: platform must be "wechat" or "alipay"');
  }
  if (!platform) {
    if (typeof wx !== 'undefined' && wx && typeof wx.request === 'function') platform = 'wechat';
    else if (typeof my !== 'undefined' && my && typeof my.request === 'function') platform = 'alipay';
    else throw new Error('minigate: neither wx nor my found; pass {platform, api}');
  }
  if (!api) {
    if (platform === 'wechat' && typeof wx !== 'undefined') api = wx;
    if (platform === 'alipay' && typeof my !== 'undefined') api = my;
  }
  if (!api || typeof api.request !== 'function') {
    throw new Error('minigate: no ' + (platform === 'wechat' ? 'wx' : 'my') + ' API object for ' + platform);
  }
  return createAdapter(platform, api);
}

/* Errors handed to onError or rejected: Error instances with a `code` and, where known, the HTTP `status`. */
function sdkError(code, message, extra) {
  var err = new Error(message);
  err.code = code;
  return assign(err, extra);
}

/* ---------------------------------------------------------------- client */

/*
 * options: endpoint, key (publishable), platform?, api?, batchSize=20 (1..100), flushInterval=5000,
 * maxQueue=1000, sampleRate=1.0, autoTrack=true, debug=false, storageKey='minigate_queue',
 * stateKey='minigate_state', maxRetries=10, sessionTimeout=30 min, requestTimeout=15000,
 * optOutByDefault=false, appVersion?, onError?(err), now?(), setTimeout?, clearTimeout?, random?(),
 * randomBytes?(n), globals? (the object holding App/Page/getCurrentPages; tests inject it).
 */
function Client(options) {
  options = options || {};
  if (typeof options.endpoint !== 'string' || !/^https?:\/\//.test(options.endpoint)) {
    throw new Error('minigate: endpoint must be the gateway base URL, e.g. https://pay.example.com');
  }
  if (typeof options.key !== 'string' || options.key.indexOf('mg_pk_') !== 0) {
    throw new Error('minigate: key must be a publishable key (mg_pk_test_... or mg_pk_live_...); ' +
      'never ship a secret API key in a mini-program');
  }
  this.adapter = detectPlatform(options);
  this.platform = this.adapter.platform;
  this.endpoint = options.endpoint.replace(/\/+$/, '');
  this.key = options.key;
  this.batchSize = Math.floor(numberOption(options.batchSize, 20, 1, MAX_BATCH));
  this.flushInterval = numberOption(options.flushInterval, 5000, 0, 24 * 3600 * 1000);
  this.maxQueue = Math.floor(numberOption(options.maxQueue, 1000, 1, 100000));
  this.sampleRate = numberOption(options.sampleRate, 1, 0, 1);
  this.maxRetries = Math.floor(numberOption(options.maxRetries, 10, 0, Infinity));
  this.sessionTimeout = numberOption(options.sessionTimeout, 30 * 60 * 1000, 1, Infinity);
  this.requestTimeout = numberOption(options.requestTimeout, 15000, 1, 600000);
  this.storageKey = options.storageKey || 'minigate_queue';
  this.stateKey = options.stateKey || 'minigate_state';
  this.debug = !!options.debug;
  this.onError = typeof options.onError === 'function' ? options.onError : noop;
  this.now = options.now || function () { return new Date().getTime(); };
  this.setTimer = options.setTimeout || function (fn, ms) { return setTimeout(fn, ms); };
  this.clearTimer = options.clearTimeout || function (handle) { clearTimeout(handle); };
  this.random = options.random || Math.random;
  this.globals = options.globals || null;
  this.randomBytes = createRandomSource(options, this.adapter.api);

  this.stats = {sent: 0, rejected: 0, dropped: 0, failed: 0};
  this.queue = [];
  this.sessionId = null;
  this.lastActivity = 0;
  this.currentPage = undefined;
  this.timer = null;
  this.timerAt = 0;
  this.retryAt = 0;
  this.attempts = 0;
  this.serverErrors = 0;
  this.draining = null;

  this.context = {platform: this.platform, sdk: SDK};
  var appVersion = options.appVersion || this.safe(this.adapter.appVersion);
  if (appVersion) this.context.app_version = String(appVersion).slice(0, 100);
  var system = this.safe(this.adapter.systemInfo);
  if (system) this.context.system = system;

  this.loadState(options);
  this.loadQueue();
  if (options.autoTrack !== false) this.installAutoTrack();
}

Client.prototype.log = function () {
  if (!this.debug || typeof console === 'undefined') return;
  var args = ['[minigate]'];
  for (var i = 0; i < arguments.length; i++) args.push(arguments[i]);
  console.log.apply(console, args);
};

Client.prototype.report = function (err) {
  this.log('error', err.code, err.message);
  try {
    this.onError(err);
  } catch (e) {
    this.log('onError threw', e);
  }
};

/* Runs fn (a platform call) and turns exceptions into undefined: analytics must never break the app. */
Client.prototype.safe = function (fn) {
  try {
    return fn();
  } catch (e) {
    this.log('platform call failed', e);
    return undefined;
  }
};

Client.prototype.newId = function () {
  return toHex(this.randomBytes(16));
};

/* ---- persisted state: distinct id, user id, opt-out flag */

Client.prototype.loadState = function (options) {
  var self = this;
  var raw = this.safe(function () { return self.adapter.getItem(self.stateKey); });
  var state = isObject(raw) ? raw : parseJson(raw);
  if (!isObject(state)) state = {};
  this.distinctId = typeof state.distinct_id === 'string' && state.distinct_id ? state.distinct_id : this.newId();
  this.userId = typeof state.user_id === 'string' && state.user_id ? state.user_id : undefined;
  this.optedOut = typeof state.opted_out === 'boolean' ? state.opted_out : !!options.optOutByDefault;
  this.sampled = this.decideSampling();
  this.saveState();
};

Client.prototype.saveState = function () {
  var self = this;
  var state = {distinct_id: this.distinctId, opted_out: this.optedOut};
  if (this.userId) state.user_id = this.userId;
  this.safe(function () { self.adapter.setItem(self.stateKey, JSON.stringify(state)); });
};

Client.prototype.decideSampling = function () {
  if (this.sampleRate >= 1) return true;
  if (this.sampleRate <= 0) return false;
  return unitHash(this.distinctId) < this.sampleRate;
};

/* ---- persisted queue */

Client.prototype.loadQueue = function () {
  var self = this;
  var raw = this.safe(function () { return self.adapter.getItem(self.storageKey); });
  var stored = parseJson(raw);
  var queue = [];
  if (Array.isArray(stored)) {
    for (var i = 0; i < stored.length; i++) {
      var e = stored[i];
      if (isObject(e) && typeof e.id === 'string' && typeof e.name === 'string') queue.push(e);
    }
  }
  if (this.optedOut) queue = [];
  if (queue.length > this.maxQueue) {
    this.stats.dropped += queue.length - this.maxQueue;
    queue = queue.slice(queue.length - this.maxQueue);
  }
  this.queue = queue;
  this.persistQueue();
  if (this.queue.length) this.schedule(this.flushInterval);
};

Client.prototype.persistQueue = function () {
  var self = this;
  var text = JSON.stringify(this.queue);
  this.safe(function () { self.adapter.setItem(self.storageKey, text); });
};

/* ---- events */

Client.prototype.cleanProperties = function (properties) {
  var out = {};
  var count = 0;
  if (!isObject(properties)) return out;
  for (var key in properties) {
    if (!has(properties, key)) continue;
    var value = properties[key];
    if (!key || key.length > MAX_KEY_LENGTH) {
      this.log('property dropped: key longer than ' + MAX_KEY_LENGTH, key.slice(0, 20));
      continue;
    }
    if (typeof value === 'string') {
      if (value.length > MAX_VALUE_LENGTH) value = value.slice(0, MAX_VALUE_LENGTH);
    } else if (typeof value === 'number') {
      if (!isFinite(value)) {
        this.log('property dropped: not a finite number', key);
        continue;
      }
    } else if (typeof value !== 'boolean') {
      if (value !== null && value !== undefined) this.log('property dropped: not a string, number or boolean', key);
      continue;
    }
    if (count >= MAX_PROPERTIES) {
      this.log('property dropped: more than ' + MAX_PROPERTIES, key);
      continue;
    }
    out[key] = value;
    count++;
  }
  return out;
};

Client.prototype.sessionFor = function (ts) {
  if (!this.sessionId || ts - this.lastActivity > this.sessionTimeout) this.sessionId = this.newId();
  this.lastActivity = ts;
  return this.sessionId;
};

Client.prototype.enqueue = function (type, name, properties, page) {
  if (this.optedOut || !this.sampled) return false;
  if (typeof name !== 'string' || !NAME_RE.test(name)) {
    this.report(sdkError('invalid_event', 'invalid event name: ' + String(name).slice(0, 120)));
    return false;
  }
  var ts = this.now();
  var event = {
    id: this.newId(), type: type, name: name, ts: ts, distinct_id: this.distinctId,
    session_id: this.sessionFor(ts), properties: this.cleanProperties(properties)
  };
  if (this.userId) event.user_id = this.userId;
  if (page) event.page = page;
  this.queue.push(event);
  if (this.queue.length > this.maxQueue) {
    var dropped = this.queue.splice(0, this.queue.length - this.maxQueue);
    this.stats.dropped += dropped.length;
    this.report(sdkError('queue_full', 'queue full: dropped the ' + dropped.length + ' oldest event(s)', {
      event_ids: dropped.map(function (e) { return e.id; })
    }));
  }
  this.persistQueue();
  if (this.queue.length >= this.batchSize) this.flush();
  else this.schedule(this.flushInterval);
  return true;
};

Client.prototype.track = function (name, properties) {
  return this.enqueue('event', name, properties, this.currentPage);
};

function normalizePath(path) {
  if (typeof path !== 'string') return undefined;
  var clean = path.split('?')[0].replace(/^\/+/, '');
  return clean ? clean.slice(0, 200) : undefined;
}

Client.prototype.currentRoute = function () {
  var host = this.globals;
  var getPages = host ? host.getCurrentPages : (typeof getCurrentPages === 'function' ? getCurrentPages : null);
  if (typeof getPages !== 'function') return undefined;
  var pages = this.safe(function () { return getPages(); });
  var top = pages && pages.length ? pages[pages.length - 1] : null;
  return top ? normalizePath(top.route || top.__route__) : undefined;
};

/* A page view; the query string is never sent (it often carries ids or phone numbers). */
Client.prototype.page = function (path, properties) {
  if (isObject(path) && properties === undefined) {
    properties = path;
    path = undefined;
  }
  var route = normalizePath(path) || this.currentRoute();
  this.currentPage = route;
  return this.enqueue('page_view', '$pageview', properties, route);
};

Client.prototype.lifecycle = function (name, properties) {
  return this.enqueue('lifecycle', name, properties, this.currentPage);
};

Client.prototype.identify = function (userId) {
  if (typeof userId === 'number' && isFinite(userId)) userId = String(userId);
  if (typeof userId !== 'string' || !userId || userId.length > MAX_USER_ID_LENGTH) {
    this.report(sdkError('invalid_user_id', 'identify() needs a non-empty user id of at most 255 characters'));
    return;
  }
  this.userId = userId;
  this.saveState();
};

Client.prototype.reset = function () {
  this.distinctId = this.newId();
  this.userId = undefined;
  this.sessionId = null;
  this.sampled = this.decideSampling();
  this.saveState();
};

Client.prototype.getDistinctId = function () {
  return this.distinctId;
};

Client.prototype.getUserId = function () {
  return this.userId;
};

Client.prototype.optOut = function () {
  this.optedOut = true;
  this.queue = [];
  this.persistQueue();
  this.saveState();
  this.cancelTimer();
};

Client.prototype.optIn = function () {
  this.optedOut = false;
  this.saveState();
};

Client.prototype.isOptedOut = function () {
  return this.optedOut;
};

Client.prototype.getStats = function () {
  return {queued: this.queue.length, sent: this.stats.sent, rejected: this.stats.rejected,
    dropped: this.stats.dropped, failed: this.stats.failed};
};

/* ---- sending */

Client.prototype.cancelTimer = function () {
  if (this.timer !== null) this.clearTimer(this.timer);
  this.timer = null;
  this.timerAt = 0;
};

/* Keeps one timer, at the earliest time anything asked for, but never before a pending retry is due. */
Client.prototype.schedule = function (delay) {
  var self = this;
  var now = this.now();
  var at = Math.max(now + delay, this.retryAt);
  if (this.timer !== null && this.timerAt <= at) return;
  this.cancelTimer();
  this.timerAt = at;
  this.timer = this.setTimer(function () {
    self.timer = null;
    self.timerAt = 0;
    self.flush();
  }, at - now);
};

/*
 * Sends queued events, one request at a time, until the queue is empty or a request must be retried later.
 * The returned promise never rejects; a call while a send is under way joins it.
 */
Client.prototype.flush = function () {
  var self = this;
  if (this.draining) return this.draining;
  var resolveDrain;
  var drain = new Promise(function (resolve) { resolveDrain = resolve; });
  this.draining = drain;
  function done() {
    if (self.draining === drain) self.draining = null;
    resolveDrain();
  }
  function step() {
    if (self.optedOut || self.queue.length === 0) {
      self.cancelTimer();
      done();
      return;
    }
    var wait = self.retryAt - self.now();
    if (wait > 0) {
      self.schedule(wait);
      done();
      return;
    }
    self.sendBatch(self.queue.slice(0, self.batchSize)).then(function (more) {
      if (more) step();
      else done();
    }, function (e) {
      self.log('send failed', e);
      done();
    });
  }
  step();
  return drain;
};

Client.prototype.removeEvents = function (batch) {
  var sent = {};
  for (var i = 0; i < batch.length; i++) sent[batch[i].id] = true;
  this.queue = this.queue.filter(function (e) { return !sent[e.id]; });
  this.persistQueue();
};

Client.prototype.backoff = function (retryAfterMs) {
  this.attempts++;
  var delay;
  if (retryAfterMs !== undefined) {
    delay = Math.min(retryAfterMs, RETRY_AFTER_CAP_MS);
  } else {
    delay = Math.min(BACKOFF_CAP_MS, BACKOFF_BASE_MS * Math.pow(2, this.attempts - 1));
    delay = Math.min(BACKOFF_CAP_MS, Math.round(delay * (1 + 0.2 * this.random())));
  }
  this.retryAt = this.now() + delay;
  this.cancelTimer();
  this.schedule(delay);
  this.log('retry in ' + delay + ' ms');
  return delay;
};

function retryAfterMs(headers, now) {
  var value = headerValue(headers, 'Retry-After');
  if (value === undefined || value === null || value === '') return undefined;
  var text = String(value).trim();
  if (/^\d+$/.test(text)) return parseInt(text, 10) * 1000;
  var date = Date.parse(text);
  return isNaN(date) ? undefined : Math.max(0, date - now);
}

/* Resolves true when the batch left the queue (sent or dropped), false when it must be retried later. */
Client.prototype.sendBatch = function (batch) {
  var self = this;
  var body = {sent_at: this.now(), context: this.context, events: batch};
  var request = {
    url: this.endpoint + '/v1/analytics/collect', method: 'POST', timeout: this.requestTimeout,
    headers: {'Content-Type': 'application/json', 'Authorization': 'Bearer ' + this.key},
    data: JSON.stringify(body)
  };
  return this.adapter.request(request).then(function (res) {
    return self.handleAnswer(batch, res);
  }, function (err) {
    self.log('network failure', err && err.message);
    self.backoff();
    return false;
  });
};

Client.prototype.handleAnswer = function (batch, res) {
  var status = res.status;
  var data = isObject(res.data) ? res.data : {};
  var error = isObject(data.error) ? data.error : {};
  if (status >= 200 && status < 300) {
    var rejected = Array.isArray(data.rejected) ? data.rejected : [];
    this.attempts = 0;
    this.serverErrors = 0;
    this.retryAt = 0;
    this.removeEvents(batch);
    this.stats.sent += typeof data.accepted === 'number' ? data.accepted : batch.length - rejected.length;
    this.stats.rejected += rejected.length;
    for (var i = 0; i < rejected.length; i++) {
      var r = isObject(rejected[i]) ? rejected[i] : {};
      var event = typeof r.index === 'number' ? batch[r.index] : undefined;
      this.report(sdkError(r.code || 'rejected', r.message || 'event rejected by the gateway', {
        status: status, event_id: r.id || (event ? event.id : undefined),
        event_name: event ? event.name : undefined
      }));
    }
    return true;
  }
  if (status === 429 || status === 408 || status >= 500) {
    if (status >= 500) this.serverErrors++;
    if (status >= 500 && this.serverErrors > this.maxRetries) {
      this.dropBatch(batch, status, error.code || 'max_retries',
        'gave up after ' + this.serverErrors + ' server errors: ' + (error.message || 'HTTP ' + status));
      return true;
    }
    this.backoff(status === 429 ? retryAfterMs(res.headers, this.now()) : undefined);
    return false;
  }
  this.dropBatch(batch, status, error.code || 'http_' + status, error.message || 'HTTP ' + status);
  return true;
};

Client.prototype.dropBatch = function (batch, status, code, message) {
  this.attempts = 0;
  this.serverErrors = 0;
  this.retryAt = 0;
  this.removeEvents(batch);
  this.stats.failed += batch.length;
  this.report(sdkError(code, message, {status: status, event_ids: batch.map(function (e) { return e.id; })}));
};

/* ---- helpers: login and payment */

/*
 * login({url, header?}): gets a login code on the device (wx.login / my.getAuthCode auth_base), posts
 * {code, platform} to the merchant's own backend, which exchanges it through minigate's /v1/wechat/login or
 * /v1/alipay/login with the secret key, and answers JSON with `user_id`; that id is bound with identify().
 */
Client.prototype.login = function (options) {
  var self = this;
  options = options || {};
  if (typeof options.url !== 'string' || !options.url) {
    return Promise.reject(sdkError('invalid_request', 'login() needs {url} of your backend'));
  }
  return this.adapter.loginCode().then(function (code) {
    if (!code) throw sdkError('login_failed', 'the platform gave no login code');
    return self.adapter.request({
      url: options.url, method: 'POST', timeout: self.requestTimeout,
      headers: assign({'Content-Type': 'application/json'}, options.header),
      data: JSON.stringify({code: code, platform: self.platform})
    });
  }, function (err) {
    throw sdkError('login_failed', (err && (err.errMsg || err.errorMessage || err.message)) || 'login failed');
  }).then(function (res) {
    var data = res.data;
    if (res.status < 200 || res.status >= 300) {
      throw sdkError('login_failed', 'backend answered HTTP ' + res.status, {status: res.status, data: data});
    }
    if (!isObject(data) || (typeof data.user_id !== 'string' && typeof data.user_id !== 'number') ||
        data.user_id === '') {
      throw sdkError('login_failed', 'backend answer has no user_id', {status: res.status, data: data});
    }
    self.identify(data.user_id);
    return data;
  });
};

/*
 * pay(order): opens the platform's cashier for an order created by the merchant backend with minigate's
 * POST /v1/orders ({id, channel, pay_params}). Resolves {status: success|cancel|fail|unknown}.
 *
 * The result comes from the device and is NOT proof of payment: fulfil the order only after minigate's
 * verified `order.paid` (webhook, or GET /v1/orders/{id} from the backend).
 */
Client.prototype.pay = function (order) {
  var self = this;
  if (!isObject(order) || typeof order.id !== 'string' || !isObject(order.pay_params)) {
    return Promise.reject(sdkError('invalid_request', 'pay() needs the order {id, channel, pay_params}'));
  }
  var expected = order.channel === 'wechat_mini' ? 'wechat' : order.channel === 'alipay_mini' ? 'alipay' : null;
  if (!expected) {
    return Promise.reject(sdkError('invalid_request', 'pay() handles wechat_mini and alipay_mini orders, not ' +
      String(order.channel)));
  }
  if (expected !== this.platform) {
    return Promise.reject(sdkError('channel_platform_mismatch',
      order.channel + ' orders cannot be paid in a ' + this.platform + ' mini-program'));
  }
  this.track('$payment_request', {order_id: order.id});
  var attempt = expected === 'wechat' ? this.adapter.payWechat(order.pay_params)
    : this.adapter.payAlipay(order.pay_params.tradeNO);
  return attempt.then(function (result) {
    var properties = {order_id: order.id, status: result.status};
    if (result.error) properties.error = String(result.error);
    self.track('$payment_result', properties);
    self.flush();
    var out = {status: result.status};
    if (result.error) out.error = String(result.error);
    return out;
  });
};

/* ---- auto-tracking */

var WRAPPED = '__minigateWrapped';

function wrapHook(original, before) {
  if (original && original[WRAPPED]) return original;
  var hook = function () {
    try {
      before.apply(this, arguments);
    } catch (e) {
      // tracking never breaks the app
    }
    if (typeof original === 'function') return original.apply(this, arguments);
    return undefined;
  };
  hook[WRAPPED] = true;
  return hook;
}

function launchProperties(opts) {
  var props = {};
  if (opts && (typeof opts.scene === 'number' || typeof opts.scene === 'string')) props.scene = opts.scene;
  if (opts && typeof opts.path === 'string') props.path = normalizePath(opts.path);
  return props;
}

/* getClient() is looked up at call time, so module-level wrappers work before init(). */
function makeAppWrapper(getClient) {
  return function (options) {
    var out = assign({}, options);
    out.onLaunch = wrapHook(out.onLaunch, function (opts) {
      var c = getClient();
      if (!c) return;
      c.sessionId = null;
      c.lifecycle('$app_launch', launchProperties(opts));
    });
    out.onShow = wrapHook(out.onShow, function (opts) {
      var c = getClient();
      if (c) c.lifecycle('$app_show', launchProperties(opts));
    });
    out.onHide = wrapHook(out.onHide, function () {
      var c = getClient();
      if (!c) return;
      c.lifecycle('$app_hide', {});
      c.flush();
    });
    return out;
  };
}

function makePageWrapper(getClient) {
  return function (options) {
    var out = assign({}, options);
    out.onShow = wrapHook(out.onShow, function () {
      var c = getClient();
      if (c) c.page(this && (this.route || this.__route__));
    });
    return out;
  };
}

Client.prototype.wrapApp = function (options) {
  var self = this;
  return makeAppWrapper(function () { return self; })(options);
};

Client.prototype.wrapPage = function (options) {
  var self = this;
  return makePageWrapper(function () { return self; })(options);
};

/*
 * Replaces the global App and Page constructors with ones that wrap their options. init() must run in app.js
 * before App({...}); pages built with Component() are not covered: call page() from their onShow.
 */
Client.prototype.installAutoTrack = function () {
  var self = this;
  var host = this.globals;
  function wrapCtor(original, wrapper) {
    var ctor = function (options) { return original.call(this, wrapper(options)); };
    ctor[WRAPPED] = true;
    return ctor;
  }
  var wrapApp = function (o) { return self.wrapApp(o); };
  var wrapPage = function (o) { return self.wrapPage(o); };
  try {
    if (host) {
      if (typeof host.App === 'function' && !host.App[WRAPPED]) host.App = wrapCtor(host.App, wrapApp);
      if (typeof host.Page === 'function' && !host.Page[WRAPPED]) host.Page = wrapCtor(host.Page, wrapPage);
    } else {
      /* eslint-disable no-global-assign */
      if (typeof App === 'function' && !App[WRAPPED]) App = wrapCtor(App, wrapApp);
      if (typeof Page === 'function' && !Page[WRAPPED]) Page = wrapCtor(Page, wrapPage);
    }
  } catch (e) {
    this.log('cannot wrap App/Page; use wrapApp()/wrapPage()', e);
  }
};

/* ---------------------------------------------------------------- module surface */

var current = null;

function getCurrent() {
  return current;
}

function init(options) {
  if (current) {
    current.log('init() called again; keeping the first client');
    return current;
  }
  current = new Client(options);
  return current;
}

function createClient(options) {
  return new Client(options);
}

function delegate(method, fallback) {
  return function () {
    if (!current) {
      if (typeof console !== 'undefined') console.warn('[minigate] call init() first');
      return typeof fallback === 'function' ? fallback() : fallback;
    }
    return current[method].apply(current, arguments);
  };
}

function notInitialized() {
  return Promise.reject(sdkError('not_initialized', 'call minigate.init() first'));
}

module.exports = {
  VERSION: VERSION,
  Client: Client,
  init: init,
  createClient: createClient,
  getClient: getCurrent,
  track: delegate('track', false),
  page: delegate('page', false),
  identify: delegate('identify'),
  reset: delegate('reset'),
  optOut: delegate('optOut'),
  optIn: delegate('optIn'),
  isOptedOut: delegate('isOptedOut', false),
  flush: delegate('flush', function () { return Promise.resolve(); }),
  getDistinctId: delegate('getDistinctId'),
  getStats: delegate('getStats'),
  login: delegate('login', notInitialized),
  pay: delegate('pay', notInitialized),
  wrapApp: makeAppWrapper(getCurrent),
  wrapPage: makePageWrapper(getCurrent)
};
