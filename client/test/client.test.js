'use strict';
// The mini-program client against a real wxsession (mock WeChat) and a real
// redis-server, both started here on 127.0.0.1. A fake `wx` global does real
// HTTP with node's http module and counts what it was asked to do.
const { test, before, after, beforeEach } = require('node:test');
const assert = require('node:assert/strict');
const http = require('node:http');
const net = require('node:net');
const path = require('node:path');
const fs = require('node:fs');
const os = require('node:os');
const { spawn, execFileSync } = require('node:child_process');
const { createClient } = require('../wxsession');

const root = path.resolve(__dirname, '..', '..');
const bin = process.env.WXSESSION_BIN
  ? path.resolve(root, process.env.WXSESSION_BIN)
  : path.join(root, 'target', 'release', 'wxsession');

let redis;
let server;
let redisPort;
let baseUrl;
// WeChat codes are single-use (the server remembers them): every wx.login of
// the whole run hands out a new one.
let codeNumber = 0;
const scratch = fs.mkdtempSync(path.join(os.tmpdir(), 'wxsession-client-'));

function freePort() {
  return new Promise((resolve) => {
    const s = net.createServer();
    s.listen(0, '127.0.0.1', () => {
      const { port } = s.address();
      s.close(() => resolve(port));
    });
  });
}

async function waitPort(port) {
  for (let i = 0; i < 200; i++) {
    const ok = await new Promise((resolve) => {
      const c = net.connect(port, '127.0.0.1', () => {
        c.end();
        resolve(true);
      });
      c.on('error', () => resolve(false));
    });
    if (ok) return;
    await new Promise((r) => setTimeout(r, 50));
  }
  throw new Error(`nothing listens on ${port}`);
}

function startRedis() {
  redis = spawn('redis-server', ['--bind', '127.0.0.1', '--port', String(redisPort), '--save', '', '--appendonly', 'no', '--dir', scratch], { stdio: 'ignore' });
  return waitPort(redisPort);
}

function stopRedis() {
  return new Promise((resolve) => {
    redis.once('exit', resolve);
    redis.kill('SIGKILL');
  });
}

/** A fake `wx`: real HTTP, in-memory storage, counters. */
function fakeWx() {
  const counts = { login: 0, requests: [] };
  const storage = new Map();
  let loginFails = false;
  global.wx = {
    login({ success, fail }) {
      counts.login += 1;
      setImmediate(() => (loginFails ? fail({ errMsg: 'login:fail' }) : success({ code: `code-${process.pid}-${++codeNumber}` })));
    },
    getStorageSync: (key) => (storage.has(key) ? storage.get(key) : ''),
    setStorageSync: (key, value) => storage.set(key, value),
    removeStorageSync: (key) => storage.delete(key),
    request({ url, method, data, header, success, fail }) {
      counts.requests.push(`${method} ${new URL(url).pathname}`);
      const body = data === undefined ? undefined : JSON.stringify(data);
      const req = http.request(url, { method, headers: Object.assign({}, header, body ? { 'content-length': Buffer.byteLength(body) } : {}) }, (res) => {
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
      if (body) req.write(body);
      req.end();
    },
  };
  return {
    counts,
    storage,
    failLogin: (v) => (loginFails = v),
    calls: (what) => counts.requests.filter((r) => r === what).length,
  };
}

before(async () => {
  if (!fs.existsSync(bin)) {
    execFileSync('cargo', ['build', '--release', '--bin', 'wxsession'], { cwd: root, stdio: 'inherit' });
  }
  redisPort = await freePort();
  await startRedis();
  const port = await freePort();
  baseUrl = `http://127.0.0.1:${port}`;
  fs.writeFileSync(path.join(scratch, 'empty.toml'), '');
  server = spawn(bin, ['--config', path.join(scratch, 'empty.toml')], {
    env: {
      PATH: process.env.PATH,
      RUST_LOG: 'warn',
      WXSESSION_WECHAT_APPID: 'wx_client_test',
      WXSESSION_WECHAT_MOCK: 'true',
      WXSESSION_REDIS_URL: `redis://127.0.0.1:${redisPort}/0`,
      WXSESSION_REDIS_TIMEOUT_MS: '300',
      WXSESSION_SERVER_BIND: `127.0.0.1:${port}`,
    },
    stdio: 'ignore',
  });
  await waitPort(port);
});

after(async () => {
  if (server) server.kill('SIGTERM');
  if (redis) redis.kill('SIGKILL');
  fs.rmSync(scratch, { recursive: true, force: true });
});

let wxs;
beforeEach(() => {
  wxs = fakeWx();
});

test('the first request logs in, then uses the stored session', async () => {
  const api = createClient({ baseUrl });
  const res = await api.request({ url: '/session' });
  assert.equal(res.statusCode, 200);
  assert.match(res.data.openid, /^mock_/);
  assert.equal(wxs.counts.login, 1);
  assert.equal(wxs.calls('POST /login'), 1);
  assert.match(wxs.storage.get('wxsession'), /^[0-9a-f]{32}$/);
  await api.request({ url: '/session' });
  assert.equal(wxs.counts.login, 1, 'no second login');
});

test('a revoked session is renewed transparently, once', async () => {
  const api = createClient({ baseUrl });
  await api.request({ url: '/session' });
  const old = wxs.storage.get('wxsession');
  // Revoked behind the client's back (another device logged out, an admin revoked).
  await new Promise((resolve) => {
    http.request(`${baseUrl}/session`, { method: 'DELETE', headers: { sessionid: old } }, (r) => r.resume().on('end', resolve)).end();
  });
  const res = await api.request({ url: '/session' });
  assert.equal(res.statusCode, 200);
  assert.notEqual(wxs.storage.get('wxsession'), old);
  assert.equal(wxs.counts.login, 2);
  assert.equal(wxs.calls('GET /session'), 3, 'one failed try, one retry');
});

test('ten concurrent cold-start requests share one login', async () => {
  const api = createClient({ baseUrl, storageKey: 'cold' });
  const answers = await Promise.all(Array.from({ length: 10 }, () => api.request({ url: '/session' })));
  assert.ok(answers.every((r) => r.statusCode === 200));
  assert.equal(wxs.counts.login, 1);
  assert.equal(wxs.calls('POST /login'), 1);
});

test('a custom header and storage key are used', async () => {
  const api = createClient({ baseUrl, header: 'sessionid', storageKey: 'other-key' });
  await api.request({ url: '/auth' });
  assert.ok(wxs.storage.has('other-key'));
});

test('server down: rejects with network_error', async () => {
  const api = createClient({ baseUrl: `http://127.0.0.1:${await freePort()}` });
  await assert.rejects(api.request({ url: '/session' }), (e) => e.code === 'network_error');
  wxs.storage.set('wxsession', '0123456789abcdef0123456789abcdef');
  await assert.rejects(api.request({ url: '/session' }), (e) => e.code === 'network_error');
});

test('wx.login failing rejects with login_failed', async () => {
  const api = createClient({ baseUrl });
  wxs.failLogin(true);
  await assert.rejects(api.request({ url: '/session' }), (e) => e.code === 'login_failed');
});

test('logout clears storage, even with the server unreachable', async () => {
  const api = createClient({ baseUrl });
  await api.request({ url: '/session' });
  const id = wxs.storage.get('wxsession');
  await api.logout();
  assert.equal(wxs.storage.has('wxsession'), false);
  assert.equal(wxs.calls('DELETE /session'), 1);
  const dead = createClient({ baseUrl: `http://127.0.0.1:${await freePort()}` });
  wxs.storage.set('wxsession', id);
  await dead.logout();
  assert.equal(wxs.storage.has('wxsession'), false);
});

test('userInfo posts the four fields to /session/userinfo', async () => {
  const api = createClient({ baseUrl });
  const res = await api.userInfo({ rawData: '{}', signature: '00', encryptedData: 'AAAA', iv: 'AAAAAAAAAAAAAAAAAAAAAA==' });
  assert.equal(res.statusCode, 422, 'the server checked it (a wrong signature here)');
  assert.equal(res.data.error, 'bad_signature');
  assert.equal(wxs.calls('POST /session/userinfo'), 1);
});

test('a server that keeps answering 401: one re-login, one retry, no loop', async () => {
  let gets = 0;
  const stubborn = http.createServer((req, res) => {
    res.setHeader('content-type', 'application/json');
    if (req.url === '/login') {
      res.end(JSON.stringify({ sessionid: 'ffffffffffffffffffffffffffffffff', expires_in: 7200 }));
    } else {
      gets += 1;
      res.statusCode = 401;
      res.end(JSON.stringify({ error: 'invalid_session', message: 'no' }));
    }
  });
  await new Promise((r) => stubborn.listen(0, '127.0.0.1', r));
  const api = createClient({ baseUrl: `http://127.0.0.1:${stubborn.address().port}` });
  const res = await api.request({ url: '/session' });
  stubborn.close();
  assert.equal(res.statusCode, 401);
  assert.equal(gets, 2);
  assert.equal(wxs.counts.login, 2);
});

test('a 503 from the server is passed through, not retried in a loop', async () => {
  const api = createClient({ baseUrl });
  await api.request({ url: '/session' });
  await stopRedis();
  try {
    const res = await api.request({ url: '/session' });
    assert.equal(res.statusCode, 503);
    assert.equal(res.data.error, 'store_unavailable');
    assert.equal(wxs.calls('GET /session'), 2, 'the warm-up and this one, no retry');
    assert.equal(wxs.counts.login, 1);
    // A cold start against a broken store: the login fails with the server's code.
    const cold = createClient({ baseUrl, storageKey: 'cold-503' });
    await assert.rejects(cold.request({ url: '/session' }), (e) => e.code === 'store_unavailable');
  } finally {
    await startRedis();
  }
});
