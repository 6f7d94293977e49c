'use strict';
// The mini-program client against a real wxsession (mock WeChat) and a real
// redis-server, both started here on 127.0.0.1. A fake `wx` global does real
// HTTP with node's http module and counts what it was asked to do. A few cases
// that the real server cannot produce on demand (a server that answers 401
// forever, odd /login answers) use a small stub HTTP server instead.
const { test, before, after, beforeEach } = require('node:test');
const assert = require('node:assert/strict');
const path = require('node:path');
const fs = require('node:fs');
const os = require('node:os');
const { spawn, execFileSync } = require('node:child_process');
const { createClient } = require('../wxsession');
const { sleep, freePort, raw, portOpen, stop, stub, fakeWx } = require('../test-support/helpers');

const root = path.resolve(__dirname, '..', '..');
const bin = process.env.WXSESSION_BIN
  ? path.resolve(root, process.env.WXSESSION_BIN)
  : path.join(root, 'target', 'release', 'wxsession');

let redis;
let server;
let serverEnv;
let serverLog = '';
let redisPort;
let baseUrl;
const scratch = fs.mkdtempSync(path.join(os.tmpdir(), 'wxsession-client-'));

// An interrupted run (Ctrl-C, a CI timeout) still leaves no process or folder behind.
function cleanupNow() {
  for (const child of [server, redis]) if (child && child.exitCode === null) child.kill('SIGKILL');
  fs.rmSync(scratch, { recursive: true, force: true });
}
process.once('exit', cleanupNow);
for (const signal of ['SIGINT', 'SIGTERM']) {
  process.once(signal, () => {
    cleanupNow();
    process.exit(128 + (signal === 'SIGINT' ? 2 : 15));
  });
}

const unhandled = [];
process.on('unhandledRejection', (reason) => unhandled.push(reason));

// Every test is bounded: a retry loop fails the test instead of hanging the run.
const T = { timeout: 20000 };



/** Waits (at most `ms`) until `ready()` is true; fails at once if `child` exits. */
async function waitFor(what, ready, child, ms = 15000) {
  const deadline = Date.now() + ms;
  while (Date.now() < deadline) {
    if (child && child.exitCode !== null) {
      throw new Error(`${what} exited with ${child.exitCode}\n${serverLog}`);
    }
    if (await ready().catch(() => false)) return;
    await sleep(50);
  }
  throw new Error(`${what} not ready after ${ms} ms\n${serverLog}`);
}

function startRedis() {
  redis = spawn(
    'redis-server',
    ['--bind', '127.0.0.1', '--port', String(redisPort), '--save', '', '--appendonly', 'no', '--dir', scratch],
    { stdio: 'ignore' }
  );
  return waitFor('redis-server', () => portOpen(redisPort), redis);
}

function redisCli(...args) {
  return execFileSync('redis-cli', ['-h', '127.0.0.1', '-p', String(redisPort), ...args], { encoding: 'utf8', timeout: 5000 }).trim();
}

before(
  async () => {
    if (!fs.existsSync(bin)) {
      // Builds the profile the path names (a cold release build takes minutes here).
      const release = !bin.split(path.sep).includes('debug');
      execFileSync('cargo', ['build', '--bin', 'wxsession', ...(release ? ['--release'] : [])], { cwd: root, stdio: 'inherit' });
      if (!fs.existsSync(bin)) throw new Error(`cargo build did not produce ${bin}`);
    }
    redisPort = await freePort();
    await startRedis();
    const port = await freePort();
    baseUrl = `http://127.0.0.1:${port}`;
    // --config needs an existing file; every setting comes from the environment.
    fs.writeFileSync(path.join(scratch, 'empty.toml'), '');
    serverEnv = {
      PATH: process.env.PATH,
      RUST_LOG: 'warn',
      WXSESSION_WECHAT_APPID: 'wx_client_test',
      WXSESSION_WECHAT_MOCK: 'true',
      WXSESSION_REDIS_URL: `redis://127.0.0.1:${redisPort}/0`,
      WXSESSION_REDIS_TIMEOUT_MS: '300',
      WXSESSION_SERVER_BIND: `127.0.0.1:${port}`,
    };
    server = spawn(bin, ['--config', path.join(scratch, 'empty.toml')], {
      env: serverEnv,
      stdio: ['ignore', 'ignore', 'pipe'],
    });
    server.stderr.setEncoding('utf8');
    server.stderr.on('data', (t) => (serverLog = (serverLog + t).slice(-4000)));
    await waitFor('wxsession', async () => (await raw('GET', `${baseUrl}/readyz`)).status === 200, server);
  },
  { timeout: 30 * 60 * 1000 }
);

after(async () => {
  await stop(server, 'SIGTERM');
  await stop(redis, 'SIGKILL');
  fs.rmSync(scratch, { recursive: true, force: true });
});

let wxs;
beforeEach(() => {
  wxs = fakeWx();
});

test('the first request logs in, then uses the stored session', T, async () => {
  const api = createClient({ baseUrl: `${baseUrl}/` });
  const res = await api.request({ url: '/session' });
  assert.equal(res.statusCode, 200);
  assert.match(res.data.openid, /^mock_/);
  assert.equal(typeof res.header, 'object');
  assert.equal(wxs.counts.login, 1);
  assert.equal(wxs.calls('POST /login'), 1);
  const id = wxs.storage.get('wxsession');
  assert.match(id, /^[0-9a-f]{32}$/);
  const again = await api.request({ url: '/session' });
  assert.equal(again.data.openid, res.data.openid);
  assert.equal(wxs.counts.login, 1, 'no second login');
  const sent = wxs.counts.requests.filter((r) => r.what === 'GET /session').map((r) => r.header.sessionid);
  assert.deepEqual(sent, [id, id]);
});

test('a client made with a device logs in naming it, and the session shows it', T, async () => {
  const api = createClient({ baseUrl, device: 'phone', storageKey: 'phone' });
  const res = await api.request({ url: '/session' });
  assert.equal(res.statusCode, 200);
  assert.equal(res.data.device, 'phone');
  const plain = createClient({ baseUrl, storageKey: 'plain' });
  assert.equal((await plain.request({ url: '/session' })).data.device, null);
});

test('a session an operator ended: forgotten, onSessionEnded, rejects session_revoked, no login of its own', T, async () => {
  const ended = [];
  const api = createClient({ baseUrl, storageKey: 'ended', onSessionEnded: (reason) => ended.push(reason) });
  assert.equal((await api.request({ url: '/session' })).statusCode, 200);
  const id = wxs.storage.get('ended');
  execFileSync(bin, ['--config', path.join(scratch, 'empty.toml'), 'sessions', 'revoke', id], { env: serverEnv });
  await assert.rejects(api.request({ url: '/session' }), (e) => e.code === 'session_revoked' && e.statusCode === 401);
  assert.deepEqual(ended, ['session_revoked']);
  assert.equal(wxs.counts.login, 1, 'no login of its own');
  assert.ok(!wxs.storage.get('ended'), 'the ended id is dropped');
  // The app decides: the next request (say, after the user taps "log in") logs in.
  assert.equal((await api.request({ url: '/session' })).statusCode, 200);
  assert.equal(wxs.counts.login, 2);
});

test('a banned user: 403 user_banned rejects with its code and the client does not log in', T, async () => {
  const ended = [];
  const api = createClient({ baseUrl, storageKey: 'banned', onSessionEnded: (reason) => ended.push(reason) });
  const me = await api.request({ url: '/session' });
  execFileSync(bin, ['--config', path.join(scratch, 'empty.toml'), 'users', 'ban', me.data.openid, '--for', '60'], { env: serverEnv });
  await assert.rejects(api.request({ url: '/session' }), (e) => e.code === 'user_banned' && e.statusCode === 403);
  assert.deepEqual(ended, ['user_banned']);
  assert.equal(wxs.counts.login, 1, 'no login of its own');
  assert.ok(!wxs.storage.get('banned'));
  execFileSync(bin, ['--config', path.join(scratch, 'empty.toml'), 'users', 'unban', me.data.openid], { env: serverEnv });
});

test('elevate: a fresh code of the same user elevates the session, and GET /session shows until when', T, async () => {
  wxs.asUser('elevate-same-user');
  const api = createClient({ baseUrl, storageKey: 'elevate' });
  const before = await api.request({ url: '/session' });
  assert.equal(before.data.elevated_until, null);
  const until = await api.elevate();
  const now = Math.floor(Date.now() / 1000);
  assert.ok(until >= now + 295 && until <= now + 305, String(until));
  const after = await api.request({ url: '/session' });
  assert.equal(after.data.elevated_until, until);
  assert.equal(wxs.counts.login, 2, 'one wx.login for the login, one for the step-up');
  const sent = wxs.counts.requests.filter((r) => r.what === 'POST /session/elevate');
  assert.equal(sent.length, 1);
  assert.equal(sent[0].header.sessionid, wxs.storage.get('elevate'));
  assert.deepEqual(sent[0].options.data, { code: 'elevate-same-user' });
});

test('elevate with no session logs in first; another user on the phone rejects identity_mismatch', T, async () => {
  const api = createClient({ baseUrl, storageKey: 'mismatch' });
  // A new user per wx.login: the step-up's code is not the session's user's.
  await assert.rejects(api.elevate(), (e) => e.code === 'identity_mismatch' && e.statusCode === 403);
  assert.equal(wxs.calls('POST /login'), 1, 'logged in first');
  assert.ok(wxs.storage.get('mismatch'), 'the session stays');
  assert.equal((await api.request({ url: '/session' })).data.elevated_until, null);
});

test('a revoked session (DELETE /session elsewhere) is renewed transparently, once', T, async () => {
  const api = createClient({ baseUrl });
  await api.request({ url: '/session' });
  const old = wxs.storage.get('wxsession');
  // Revoked behind the client's back (another device logged out, an admin revoked).
  assert.equal((await raw('DELETE', `${baseUrl}/session`, { sessionid: old })).status, 204);
  const res = await api.request({ url: '/session' });
  assert.equal(res.statusCode, 200);
  assert.notEqual(wxs.storage.get('wxsession'), old);
  assert.equal(wxs.counts.login, 2);
  assert.equal(wxs.calls('POST /login'), 2);
  assert.equal(wxs.calls('GET /session'), 3, 'the warm-up, one failed try, one retry');
});

test('a revoked session whose re-login fails: rejects login_failed, the dead id is dropped', T, async () => {
  const api = createClient({ baseUrl });
  await api.request({ url: '/session' });
  const old = wxs.storage.get('wxsession');
  await raw('DELETE', `${baseUrl}/session`, { sessionid: old });
  wxs.failLogin(true);
  await assert.rejects(api.request({ url: '/session' }), (e) => e.code === 'login_failed');
  assert.equal(wxs.storage.has('wxsession'), false, 'the dead id is not kept');
  assert.equal(wxs.calls('GET /session'), 2, 'no retry without a session');
  wxs.failLogin(false);
  assert.equal((await api.request({ url: '/session' })).statusCode, 200);
  assert.equal(wxs.calls('GET /session'), 3, 'the next request logs in first, without a doomed try');
});

test('an expired session (its Redis key gone) is renewed transparently, once', T, async () => {
  const api = createClient({ baseUrl });
  await api.request({ url: '/session' });
  const old = wxs.storage.get('wxsession');
  assert.equal(redisCli('DEL', `wxsess:s:${old}`), '1');
  const res = await api.request({ url: '/session' });
  assert.equal(res.statusCode, 200);
  assert.notEqual(wxs.storage.get('wxsession'), old);
  assert.equal(wxs.counts.login, 2);
  assert.equal(wxs.calls('GET /session'), 3);
});

test('ten concurrent cold-start requests share one login', T, async () => {
  const api = createClient({ baseUrl, storageKey: 'cold' });
  const answers = await Promise.all(Array.from({ length: 10 }, () => api.request({ url: '/session' })));
  assert.ok(answers.every((r) => r.statusCode === 200));
  assert.equal(new Set(answers.map((r) => r.data.openid)).size, 1);
  assert.equal(wxs.counts.login, 1);
  assert.equal(wxs.calls('POST /login'), 1);
  assert.equal(wxs.calls('GET /session'), 10);
  assert.ok(wxs.storage.has('cold'));
});

test('ten concurrent requests on a revoked session share one re-login', T, async () => {
  const api = createClient({ baseUrl });
  await api.request({ url: '/session' });
  const old = wxs.storage.get('wxsession');
  await raw('DELETE', `${baseUrl}/session`, { sessionid: old });
  const answers = await Promise.all(Array.from({ length: 10 }, () => api.request({ url: '/session' })));
  assert.ok(answers.every((r) => r.statusCode === 200));
  assert.equal(wxs.counts.login, 2, 'the first login and one shared re-login');
  assert.equal(wxs.calls('POST /login'), 2);
  assert.equal(wxs.calls('GET /session'), 1 + 10 + 10);
});

test('session_required (a header the server does not read): one re-login, one retry, then the 401', T, async () => {
  const api = createClient({ baseUrl, header: 'x-my-session', storageKey: 'other-key' });
  const res = await api.request({ url: '/session' });
  assert.equal(res.statusCode, 401);
  assert.equal(res.data.error, 'session_required');
  assert.equal(wxs.counts.login, 2);
  assert.equal(wxs.calls('GET /session'), 2);
  const sent = wxs.counts.requests.filter((r) => r.what === 'GET /session');
  assert.ok(sent.every((r) => /^[0-9a-f]{32}$/.test(r.header['x-my-session']) && !('sessionid' in r.header)));
  assert.ok(wxs.storage.has('other-key'));
  assert.ok(!wxs.storage.has('wxsession'));
});

test("the caller's headers and other wx.request options are passed through", T, async () => {
  const api = createClient({ baseUrl });
  const res = await api.request({ url: '/session', header: { 'x-trace': 't1', sessionid: 'spoofed' }, timeout: 4321 });
  assert.equal(res.statusCode, 200);
  const sent = wxs.counts.requests.find((r) => r.what === 'GET /session');
  assert.equal(sent.header['x-trace'], 't1');
  assert.equal(sent.header.sessionid, wxs.storage.get('wxsession'), 'the stored id wins');
  assert.equal(sent.options.timeout, 4321);
});

test('server down: rejects with network_error, cold or warm', T, async () => {
  const api = createClient({ baseUrl: `http://127.0.0.1:${await freePort()}` });
  await assert.rejects(api.request({ url: '/session' }), (e) => e instanceof Error && e.code === 'network_error');
  assert.equal(wxs.counts.login, 1);
  wxs.storage.set('wxsession', '0123456789abcdef0123456789abcdef');
  await assert.rejects(api.request({ url: '/session' }), (e) => e.code === 'network_error');
  assert.equal(wxs.counts.login, 1, 'a network error is not a reason to log in again');
  assert.equal(wxs.storage.get('wxsession'), '0123456789abcdef0123456789abcdef', 'nor to forget the session');
});

test('wx.login failing rejects with login_failed; the next login works', T, async () => {
  const api = createClient({ baseUrl });
  wxs.failLogin(true);
  await assert.rejects(api.request({ url: '/session' }), (e) => e.code === 'login_failed');
  await assert.rejects(api.login(), (e) => e.code === 'login_failed');
  assert.equal(wxs.calls('POST /login'), 0);
  wxs.failLogin(false);
  const res = await api.request({ url: '/session' });
  assert.equal(res.statusCode, 200, 'a failed login does not stay in flight');
});

test('a failed POST /login rejects with the server code, or login_failed', T, async () => {
  const answers = [
    [401, { error: 'invalid_code', message: 'code used' }, 'invalid_code'],
    [200, { expires_in: 7200 }, 'login_failed'],
    [502, '<html>bad gateway</html>', 'login_failed'],
  ];
  for (const [status, body, code] of answers) {
    const s = await stub(() => [status, body]);
    const api = createClient({ baseUrl: s.url });
    await assert.rejects(api.request({ url: '/session' }), (e) => e.code === code && e.statusCode === status);
    await s.close();
    assert.deepEqual(s.hits, { '/login': 1 }, `${status} ${JSON.stringify(body)}: one login, no request`);
  }
  assert.equal(wxs.storage.size, 0);
});

test('logout logs out on the server and clears storage, even with the server unreachable', T, async () => {
  const api = createClient({ baseUrl });
  await api.request({ url: '/session' });
  const id = wxs.storage.get('wxsession');
  await api.logout();
  assert.equal(wxs.storage.has('wxsession'), false);
  assert.equal(wxs.calls('DELETE /session'), 1);
  assert.equal((await raw('GET', `${baseUrl}/session`, { sessionid: id })).status, 401, 'dead on the server');
  await api.logout(); // nothing stored: nothing sent, no rejection
  assert.equal(wxs.calls('DELETE /session'), 1);
  const dead = createClient({ baseUrl: `http://127.0.0.1:${await freePort()}` });
  wxs.storage.set('wxsession', id);
  await dead.logout();
  assert.equal(wxs.storage.has('wxsession'), false);
});

test('logout during a cold-start login logs that new session out too', T, async () => {
  const api = createClient({ baseUrl });
  const pending = api.request({ url: '/session' });
  const out = api.logout();
  const [res] = await Promise.all([pending, out]);
  assert.equal(res.statusCode, 200);
  assert.equal(wxs.storage.has('wxsession'), false);
  const loggedOut = wxs.counts.requests.find((r) => r.what === 'DELETE /session');
  assert.ok(loggedOut, 'DELETE /session was sent');
  assert.equal((await raw('GET', `${baseUrl}/session`, { sessionid: loggedOut.header.sessionid })).status, 401);
});

test('userInfo posts the four fields to /session/userinfo', T, async () => {
  const api = createClient({ baseUrl });
  const res = await api.userInfo({ rawData: '{}', signature: '00', encryptedData: 'AAAA', iv: 'AAAAAAAAAAAAAAAAAAAAAA==' });
  assert.equal(res.statusCode, 422, 'the server checked it (a wrong signature here)');
  assert.equal(res.data.error, 'bad_signature');
  const sent = wxs.counts.requests.find((r) => r.what === 'POST /session/userinfo');
  assert.deepEqual(Object.keys(sent.options.data).sort(), ['encryptedData', 'iv', 'rawData', 'signature']);
  assert.equal(sent.header.sessionid, wxs.storage.get('wxsession'));
  assert.equal(wxs.counts.login, 1);
});

test('a server that keeps answering 401: one re-login, one retry, no loop', T, async () => {
  // 401 for ever (after 20 tries a 500, so that a looping client ends and fails the counts).
  let tries = 0;
  const s = await stub((p) => {
    if (p === '/login') return [200, { sessionid: 'ffffffffffffffffffffffffffffffff', expires_in: 7200 }];
    return ++tries > 20 ? [500, { error: 'stop', message: 'loop' }] : [401, { error: 'invalid_session', message: 'no' }];
  });
  const api = createClient({ baseUrl: s.url });
  const res = await api.request({ url: '/session' });
  // With the session stored already, too: still exactly one re-login.
  const warm = await api.request({ url: '/session' });
  await s.close();
  assert.equal(res.statusCode, 401);
  assert.equal(warm.statusCode, 401);
  assert.deepEqual(s.hits, { '/login': 3, '/session': 4 });
  assert.equal(wxs.counts.login, 3);
});

test('other 401s (not a session error) are handed back without a re-login', T, async () => {
  const s = await stub((p) =>
    p === '/login' ? [200, { sessionid: 'ffffffffffffffffffffffffffffffff', expires_in: 7200 }] : [401, { error: 'unauthorized', message: 'admin' }]
  );
  const api = createClient({ baseUrl: s.url });
  const res = await api.request({ url: '/admin/x' });
  await s.close();
  assert.equal(res.statusCode, 401);
  assert.deepEqual(s.hits, { '/login': 1, '/admin/x': 1 });
});

// Last against the real server: it stops and restarts Redis.
test('a 503 from the server is passed through, not retried in a loop', T, async () => {
  const api = createClient({ baseUrl });
  await api.request({ url: '/session' });
  await stop(redis, 'SIGKILL');
  try {
    const res = await api.request({ url: '/session' });
    assert.equal(res.statusCode, 503);
    assert.equal(res.data.error, 'store_unavailable');
    assert.equal(wxs.calls('GET /session'), 2, 'the warm-up and this one, no retry');
    assert.equal(wxs.counts.login, 1);
    // A cold start against a broken store: the login fails with the server's code.
    const cold = createClient({ baseUrl, storageKey: 'cold-503' });
    await assert.rejects(cold.request({ url: '/session' }), (e) => e.code === 'store_unavailable' && e.statusCode === 503);
    assert.equal(wxs.counts.login, 2);
    assert.equal(wxs.calls('POST /login'), 2, 'the warm-up login and one failed cold login');
    assert.equal(wxs.calls('GET /session'), 2, 'no request without a session');
  } finally {
    await startRedis();
  }
  // And back to normal once Redis is.
  await waitFor('wxsession', async () => (await raw('GET', `${baseUrl}/readyz`)).status === 200, server);
  const again = await api.request({ url: '/session' });
  assert.equal(again.statusCode, 200, 'the old session is gone with Redis; one re-login renews it');
});

test('no unhandled rejections', T, async () => {
  await sleep(50);
  assert.deepEqual(unhandled, []);
});
