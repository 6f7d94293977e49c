// Helpers of the client tests that hold no state of a run: a fake `wx` (or
// `qq`, `tt`, `my`), plain HTTP, ports and child processes. Kept out of
// client/test/, where the test runner would load every file as a test file.
'use strict';

const http = require('node:http');
const net = require('node:net');

// Login codes are single-use (the server remembers them): every login of the
// whole run hands out a new one.
let codeNumber = 0;

const sleep = (ms) => new Promise((r) => setTimeout(r, ms));

function freePort() {
  return new Promise((resolve, reject) => {
    const s = net.createServer();
    s.on('error', reject);
    s.listen(0, '127.0.0.1', () => {
      const { port } = s.address();
      s.close(() => resolve(port));
    });
  });
}

/** A plain HTTP exchange outside the client: { status, body }. */
function raw(method, url, headers) {
  return new Promise((resolve, reject) => {
    const req = http.request(url, { method, headers: headers || {} }, (res) => {
      let text = '';
      res.setEncoding('utf8');
      res.on('data', (c) => (text += c));
      res.on('end', () => resolve({ status: res.statusCode, body: text }));
    });
    req.on('error', reject);
    req.setTimeout(5000, () => req.destroy(new Error('timeout')));
    req.end();
  });
}

function portOpen(port) {
  return new Promise((resolve) => {
    const c = net.connect(port, '127.0.0.1', () => {
      c.end();
      resolve(true);
    });
    c.on('error', () => resolve(false));
  });
}

/** Stops a child: `signal`, then SIGKILL if it is still there after 5 s. */
function stop(child, signal) {
  if (!child || child.exitCode !== null || child.signalCode !== null) return Promise.resolve();
  return new Promise((resolve) => {
    const force = setTimeout(() => child.kill('SIGKILL'), 5000);
    child.once('exit', () => {
      clearTimeout(force);
      resolve();
    });
    child.kill(signal);
  });
}

/** The platform globals a fake may stand for; the client takes the first that exists. */
const PLATFORMS = ['wx', 'qq', 'tt', 'my'];

/**
 * One real HTTP exchange for a fake platform: `data` already a string (the
 * body) or an object (GET: the query string). Calls back `done(error, { status,
 * text, headers })`.
 */
function exchange({ url, method, data, headers, timeout }, done) {
  const target = new URL(url);
  let body;
  if (data !== undefined && data !== null && method === 'GET') {
    for (const [k, v] of Object.entries(data)) target.searchParams.set(k, String(v));
  } else if (data !== undefined && data !== null) {
    body = typeof data === 'string' ? data : JSON.stringify(data);
  }
  const sent = Object.assign({}, headers, body ? { 'content-length': Buffer.byteLength(body) } : {});
  const req = http.request(target, { method, headers: sent }, (res) => {
    let text = '';
    res.setEncoding('utf8');
    res.on('data', (chunk) => (text += chunk));
    res.on('end', () => done(null, { status: res.statusCode, text, headers: res.headers }));
  });
  req.on('error', (e) => done(e));
  req.setTimeout(timeout || 10000, () => req.destroy(Object.assign(new Error('timeout'), { code: 'ETIMEDOUT' })));
  if (body) req.write(body);
  req.end();
  return target;
}

/**
 * A fake platform global `name` ('wx', 'qq', 'tt' or 'my'), set as the only one
 * of the four: real HTTP, in-memory storage, counters. `wx`, `qq` and `tt` take
 * and give WeChat's shapes; `my` Alipay's (getAuthCode and authCode; request
 * with `headers`, answering `status` and `headers`, its `dataType` 'json' by
 * default and failing with error 14 on a body that is not JSON, as before base
 * library 2.9.5; storage calls that take and give objects).
 *
 * options.appid: the mini-program's own appid, answered by getAccountInfoSync
 *   (`tt`: by getEnvInfoSync, as Douyin has no getAccountInfoSync); left out,
 *   the fake has no such function (an old base library).
 * options.accountInfoThrows: getAccountInfoSync exists but throws.
 * options.httpErrorsFail (`my` only): an HTTP status of 400 or more comes
 *   through `fail` as error 19 with status, data and headers, not `success`.
 */
function fakePlatform(name, options) {
  const opts = options || {};
  const alipay = name === 'my';
  const counts = { login: 0, requests: [] };
  const storage = new Map();
  let loginFails = false;
  // In mock mode the server's openid follows from the code: one user's codes
  // all mean that user.
  let user = '';
  const nextCode = () => user || `code-${name}-${process.pid}-${++codeNumber}`;
  const api = {};

  if (alipay) {
    api.getAuthCode = ({ scopes, success, fail }) => {
      counts.login += 1;
      counts.scopes = scopes;
      setImmediate(() =>
        loginFails ? fail({ error: 11, errorMessage: '用户取消授权' }) : success({ authCode: nextCode(), authSuccessScopes: [scopes] })
      );
    };
    const keyOf = (arg) => {
      if (!arg || typeof arg !== 'object' || typeof arg.key !== 'string') {
        throw Object.assign(new Error('必填参数为空'), { error: 2 });
      }
      return arg.key;
    };
    api.getStorageSync = (arg) => {
      const key = keyOf(arg);
      return { data: storage.has(key) ? storage.get(key) : null };
    };
    api.setStorageSync = (arg) => {
      storage.set(keyOf(arg), arg.data);
      return { success: true };
    };
    api.removeStorageSync = (arg) => {
      storage.delete(keyOf(arg));
      return { success: true };
    };
    api.request = (options) => {
      const { url, method = 'GET', headers = {}, dataType = 'json', success, fail } = options;
      let data = options.data;
      // my.request JSON-encodes an object only for POST with a JSON content-type.
      const type = Object.keys(headers).find((k) => k.toLowerCase() === 'content-type');
      const json = !type || /^application\/json/i.test(headers[type]);
      if (data && typeof data === 'object' && method !== 'GET') {
        if (method === 'POST' && json) data = JSON.stringify(data);
        else return setImmediate(() => fail({ error: 2, errorMessage: `fake my.request: an object body on ${method}` }));
      }
      const target = exchange({ url, method, data, headers, timeout: options.timeout }, (e, res) => {
        if (e) return fail({ error: e.code === 'ETIMEDOUT' ? 13 : 12, errorMessage: `request:fail ${e.code}` });
        let body = res.text;
        if (dataType === 'json') {
          try {
            body = JSON.parse(res.text);
          } catch (err) {
            return fail({ error: 14, errorMessage: 'JSON parse data error', status: 13 });
          }
        }
        const answer = { status: res.status, data: body, headers: res.headers };
        if (opts.httpErrorsFail && res.status >= 400) return fail(Object.assign({ error: 19, errorMessage: 'http status error' }, answer));
        success(answer);
      });
      counts.requests.push({ what: `${method} ${target.pathname}`, header: Object.assign({}, headers), options });
    };
  } else {
    api.login = ({ success, fail }) => {
      counts.login += 1;
      setImmediate(() => (loginFails ? fail({ errMsg: 'login:fail' }) : success({ code: nextCode(), errMsg: 'login:ok' })));
    };
    if (opts.wecom) {
      // WeCom's runtime: wx.qy.login gives the code its jscode2session takes.
      counts.qyLogin = 0;
      api.qy = {
        login({ success }) {
          counts.qyLogin += 1;
          setImmediate(() => success({ code: nextCode(), errMsg: 'qy.login:ok' }));
        },
      };
    }
    api.getStorageSync = (key) => (storage.has(key) ? storage.get(key) : '');
    api.setStorageSync = (key, value) => storage.set(key, value);
    api.removeStorageSync = (key) => storage.delete(key);
    api.request = (options) => {
      const { url, method = 'GET', data, header = {}, success, fail } = options;
      // As wx.request: GET data goes in the query string, anything else as JSON;
      // an answer that is JSON is parsed, else handed on as text.
      const target = exchange({ url, method, data, headers: header, timeout: options.timeout }, (e, res) => {
        if (e) return fail({ errMsg: `request:fail ${e.code}` });
        let parsed = res.text;
        try {
          parsed = res.text ? JSON.parse(res.text) : '';
        } catch (err) {
          // not JSON: handed on as text, as wx.request does
        }
        success({ statusCode: res.status, data: parsed, header: res.headers });
      });
      counts.requests.push({ what: `${method} ${target.pathname}`, header: Object.assign({}, header), options });
    };
  }

  if (opts.accountInfoThrows) {
    api.getAccountInfoSync = () => {
      throw new Error('getAccountInfoSync:fail not supported');
    };
  } else if (opts.appid && name === 'tt') {
    api.getEnvInfoSync = () => ({ microapp: { appId: opts.appid, envType: 'production', mpVersion: '1.0.0' }, common: {} });
  } else if (opts.appid) {
    api.getAccountInfoSync = () => ({ miniProgram: { appId: opts.appid, envVersion: 'release', version: '1.0.0' } });
  }

  for (const other of PLATFORMS) delete global[other];
  global[name] = api;
  return {
    api,
    counts,
    storage,
    failLogin: (v) => (loginFails = v),
    /** From now on the login's codes are all this user's (empty: a new user each time). */
    asUser: (name) => (user = name),
    calls: (what) => counts.requests.filter((r) => r.what === what).length,
  };
}

/** A fake `wx` (see fakePlatform). */
function fakeWx(options) {
  return fakePlatform('wx', options);
}

/** A stub HTTP server answering with `handler(req) → [status, body]`; counts requests by path. */
async function stub(handler) {
  const hits = {};
  const s = http.createServer((req, res) => {
    const p = new URL(req.url, 'http://x').pathname;
    hits[p] = (hits[p] || 0) + 1;
    req.resume().on('end', () => {
      const [status, body] = handler(p, req);
      res.statusCode = status;
      res.setHeader('content-type', typeof body === 'string' ? 'text/html' : 'application/json');
      res.end(typeof body === 'string' ? body : JSON.stringify(body));
    });
  });
  await new Promise((r) => s.listen(0, '127.0.0.1', r));
  return { url: `http://127.0.0.1:${s.address().port}`, hits, close: () => new Promise((r) => s.close(r)) };
}

module.exports = { sleep, freePort, raw, portOpen, stop, stub, fakeWx, fakePlatform };
