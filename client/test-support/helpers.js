// Helpers of the client tests that hold no state of a run: a fake `wx`, plain
// HTTP, ports and child processes. Kept out of client/test/, where the test
// runner would load every file as a test file.
'use strict';

const http = require('node:http');
const net = require('node:net');

// WeChat codes are single-use (the server remembers them): every wx.login of
// the whole run hands out a new one.
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

/** A fake `wx`: real HTTP, in-memory storage, counters. */
function fakeWx() {
  const counts = { login: 0, requests: [] };
  const storage = new Map();
  let loginFails = false;
  // In mock mode the server's openid follows from the code: one user's codes
  // all mean that user.
  let user = '';
  global.wx = {
    login({ success, fail }) {
      counts.login += 1;
      setImmediate(() =>
        loginFails ? fail({ errMsg: 'login:fail' }) : success({ code: user || `code-${process.pid}-${++codeNumber}` })
      );
    },
    getStorageSync: (key) => (storage.has(key) ? storage.get(key) : ''),
    setStorageSync: (key, value) => storage.set(key, value),
    removeStorageSync: (key) => storage.delete(key),
    request(options) {
      const { url, method = 'GET', data, header = {}, success, fail } = options;
      const target = new URL(url);
      let body;
      // As wx.request: GET data goes in the query string, anything else as JSON.
      if (data !== undefined && method === 'GET') {
        for (const [k, v] of Object.entries(data)) target.searchParams.set(k, String(v));
      } else if (data !== undefined) {
        body = typeof data === 'string' ? data : JSON.stringify(data);
      }
      counts.requests.push({ what: `${method} ${target.pathname}`, header: Object.assign({}, header), options });
      const headers = Object.assign({}, header, body ? { 'content-length': Buffer.byteLength(body) } : {});
      const req = http.request(target, { method, headers }, (res) => {
        let text = '';
        res.setEncoding('utf8');
        res.on('data', (chunk) => (text += chunk));
        res.on('end', () => {
          let parsed = text;
          try {
            parsed = text ? JSON.parse(text) : '';
          } catch (e) {
            // not JSON: handed on as text, as wx.request does
          }
          success({ statusCode: res.statusCode, data: parsed, header: res.headers });
        });
      });
      req.on('error', (e) => fail({ errMsg: `request:fail ${e.code}` }));
      req.setTimeout(options.timeout || 10000, () => req.destroy(Object.assign(new Error('timeout'), { code: 'ETIMEDOUT' })));
      if (body) req.write(body);
      req.end();
    },
  };
  return {
    counts,
    storage,
    failLogin: (v) => (loginFails = v),
    /** From now on wx.login's codes are all this user's (empty: a new user each time). */
    asUser: (name) => (user = name),
    calls: (what) => counts.requests.filter((r) => r.what === what).length,
  };
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

module.exports = { sleep, freePort, raw, portOpen, stop, stub, fakeWx };
