'use strict';
// The mini-program client against a real wxsession (mock WeChat) and a real
// redis-server, both started here on 127.0.0.1. A fake `wx` global does real
// HTTP with node's http module and counts what it was asked to do. A few cases
// that the real server cannot produce on demand (a server that answers 401
// forever, odd /login answers) use a small stub HTTP server instead. A second
// wxsession serves several mock apps, one per platform, for the client's
// `appid` and its fake `qq`, `tt` and `my` globals.
const { test, before, after, beforeEach } = require('node:test');
const assert = require('node:assert/strict');
const path = require('node:path');
const fs = require('node:fs');
const os = require('node:os');
const { spawn, execFileSync } = require('node:child_process');
const { createClient } = require('../wxsession');
const { sleep, freePort, raw, portOpen, stop, stub, fakeWx, fakePlatform } = require('../test-support/helpers');

const root = path.resolve(__dirname, '..', '..');
const bin = process.env.WXSESSION_BIN
  ? path.resolve(root, process.env.WXSESSION_BIN)
  : path.join(root, 'target', 'release', 'wxsession');

let redis;
let server;
let multiServer;
let multiUrl;
const started = []; // every child, for cleanupNow, from the moment it is spawned
let serverEnv;
let serverLog = '';
let redisPort;
let baseUrl;
const scratch = fs.mkdtempSync(path.join(os.tmpdir(), 'wxsession-client-'));

// An interrupted run (Ctrl-C, a CI timeout) still leaves no process or folder behind.
function cleanupNow() {
  for (const child of started) if (child.exitCode === null) child.kill('SIGKILL');
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
  started.push(redis);
  return waitFor('redis-server', () => portOpen(redisPort), redis);
}

function redisCli(...args) {
  return execFileSync('redis-cli', ['-h', '127.0.0.1', '-p', String(redisPort), ...args], { encoding: 'utf8', timeout: 5000 }).trim();
}

/** The multi-app server's mock apps, one per platform, by environment alone (no [wechat] app). */
const APPIDS = {
  wechat: 'wx_multi_test',
  qq: '1109000001',
  douyin: 'tt0a1b2c3d4e5f6a7b',
  alipay: '2021000000000001',
  wecom: 'wx_wecom_test',
};
const MULTI_APPS = {
  WXSESSION_APPS_WX_SHOP_PLATFORM: 'wechat',
  WXSESSION_APPS_WX_SHOP_APPID: APPIDS.wechat,
  WXSESSION_APPS_WX_SHOP_MOCK: 'true',
  WXSESSION_APPS_QQ_SHOP_PLATFORM: 'qq',
  WXSESSION_APPS_QQ_SHOP_APPID: APPIDS.qq,
  WXSESSION_APPS_QQ_SHOP_MOCK: 'true',
  WXSESSION_APPS_TT_SHOP_PLATFORM: 'douyin',
  WXSESSION_APPS_TT_SHOP_APPID: APPIDS.douyin,
  WXSESSION_APPS_TT_SHOP_MOCK: 'true',
  WXSESSION_APPS_ALI_SHOP_PLATFORM: 'alipay',
  WXSESSION_APPS_ALI_SHOP_APPID: APPIDS.alipay,
  WXSESSION_APPS_ALI_SHOP_MOCK: 'true',
  WXSESSION_APPS_STAFF_PLATFORM: 'wecom',
  WXSESSION_APPS_STAFF_APPID: APPIDS.wecom,
  WXSESSION_APPS_STAFF_CORPID: 'ww_test_corp',
  WXSESSION_APPS_STAFF_MOCK: 'true',
};

/** Starts the server with `env` (every setting from it) and waits until `url` is ready. */
async function startServer(env, url) {
  const child = spawn(bin, ['--config', path.join(scratch, 'empty.toml')], {
    env,
    stdio: ['ignore', 'ignore', 'pipe'],
  });
  started.push(child);
  child.stderr.setEncoding('utf8');
  child.stderr.on('data', (t) => (serverLog = (serverLog + t).slice(-4000)));
  await waitFor('wxsession', async () => (await raw('GET', `${url}/readyz`)).status === 200, child);
  return child;
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
    server = await startServer(serverEnv, baseUrl);
    // Several apps, so a login must name its own; its own Redis database.
    const multiPort = await freePort();
    multiUrl = `http://127.0.0.1:${multiPort}`;
    const multiEnv = Object.assign({}, serverEnv, MULTI_APPS, {
      WXSESSION_REDIS_URL: `redis://127.0.0.1:${redisPort}/1`,
      WXSESSION_SERVER_BIND: `127.0.0.1:${multiPort}`,
    });
    delete multiEnv.WXSESSION_WECHAT_APPID;
    delete multiEnv.WXSESSION_WECHAT_MOCK;
    multiServer = await startServer(multiEnv, multiUrl);
  },
  { timeout: 30 * 60 * 1000 }
);

after(async () => {
  await stop(multiServer, 'SIGTERM');
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
  // The request and the logout go out together after the login, on two
  // connections: the server may take either first. Either way the request
  // does not log in again, and nothing is left logged in.
  assert.ok([200, 401].includes(res.statusCode), `${res.statusCode}`);
  assert.equal(wxs.counts.login, 1);
  assert.equal(wxs.storage.has('wxsession'), false);
  const loggedOut = wxs.counts.requests.find((r) => r.what === 'DELETE /session');
  assert.ok(loggedOut, 'DELETE /session was sent');
  assert.equal((await raw('GET', `${baseUrl}/session`, { sessionid: loggedOut.header.sessionid })).status, 401);
});

test('a request under way when logout is called does not log in again on its 401', T, async () => {
  // Whatever the server answers the request (here: the session is gone), the
  // logout wins: no login brings a session back behind it.
  const s = await stub((p) =>
    p === '/login'
      ? [200, { sessionid: 'eeeeeeeeeeeeeeeeeeeeeeeeeeeeeeee', expires_in: 7200 }]
      : [401, { error: 'invalid_session', message: 'gone' }]
  );
  wxs.storage.set('wxsession', 'dddddddddddddddddddddddddddddddd');
  const api = createClient({ baseUrl: s.url });
  const pending = api.request({ url: '/session' });
  const out = api.logout();
  const [res] = await Promise.all([pending, out]);
  await s.close();
  assert.equal(res.statusCode, 401);
  assert.equal(res.data.error, 'invalid_session');
  assert.equal(s.hits['/login'] || 0, 0);
  assert.equal(wxs.counts.login, 0);
  assert.equal(wxs.storage.has('wxsession'), false);
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

// ---- appid, and the platforms: mostly against the multi-app server ----

/** The bodies of the POST /logins `fake` sent (Alipay's as the JSON text they are). */
function loginBodies(fake) {
  return fake.counts.requests
    .filter((r) => r.what === 'POST /login')
    .map((r) => (typeof r.options.data === 'string' ? JSON.parse(r.options.data) : r.options.data));
}

test("the mini-program's own appid (getAccountInfoSync) is sent, and GET /session names that app and platform", T, async () => {
  const fake = fakeWx({ appid: APPIDS.wechat });
  const api = createClient({ baseUrl: multiUrl });
  const res = await api.request({ url: '/session' });
  assert.equal(res.statusCode, 200);
  assert.equal(res.data.appid, APPIDS.wechat);
  assert.equal(res.data.platform, 'wechat');
  assert.deepEqual(loginBodies(fake), [{ code: loginBodies(fake)[0].code, appid: APPIDS.wechat }]);
});

test('an explicit appid wins over the running one; null or empty sends none (unknown_app with several apps)', T, async () => {
  const fake = fakeWx({ appid: APPIDS.wechat });
  const other = createClient({ baseUrl: multiUrl, appid: APPIDS.qq, storageKey: 'explicit' });
  const res = await other.request({ url: '/session' });
  assert.equal(res.data.appid, APPIDS.qq);
  assert.equal(res.data.platform, 'qq');
  for (const appid of [null, '']) {
    const none = createClient({ baseUrl: multiUrl, appid, storageKey: `none-${appid}` });
    await assert.rejects(none.request({ url: '/session' }), (e) => e.code === 'unknown_app' && e.statusCode === 400);
  }
  assert.deepEqual(
    loginBodies(fake).map((b) => ('appid' in b ? b.appid : 'none')),
    [APPIDS.qq, 'none', 'none']
  );
  assert.deepEqual([...fake.storage.keys()], ['explicit']);
});

test('no getAccountInfoSync, or one that throws: no appid is sent, and a one-app server takes that', T, async () => {
  for (const options of [{}, { accountInfoThrows: true }]) {
    const fake = fakeWx(options);
    const api = createClient({ baseUrl });
    const res = await api.request({ url: '/session' });
    assert.equal(res.statusCode, 200);
    assert.equal(res.data.appid, 'wx_client_test');
    assert.equal(res.data.platform, 'wechat');
    assert.deepEqual(Object.keys(loginBodies(fake)[0]), ['code'], JSON.stringify(options));
  }
});

test('an appid the server does not serve rejects with unknown_app; nothing is stored or requested', T, async () => {
  for (const url of [multiUrl, baseUrl]) {
    const api = createClient({ baseUrl: url, appid: 'wx_nobody', storageKey: 'unknown' });
    await assert.rejects(api.request({ url: '/session' }), (e) => e.code === 'unknown_app' && e.statusCode === 400);
  }
  assert.equal(wxs.calls('POST /login'), 2);
  assert.equal(wxs.calls('GET /session'), 0);
  assert.ok(!wxs.storage.has('unknown'));
});

/**
 * One client on the global `fake` stands for, against its app on the
 * multi-app server: login and a guarded request, a step-up, a session revoked
 * behind its back and renewed, a logout.
 */
async function roundTrip(fake, appid, platform, storageKey) {
  fake.asUser(`${platform}-${storageKey}-${process.pid}`); // the step-up needs the session's user
  const api = createClient({ baseUrl: multiUrl, storageKey });
  const res = await api.request({ url: '/session' });
  assert.equal(res.statusCode, 200, JSON.stringify(res.data));
  assert.equal(res.data.appid, appid);
  assert.equal(res.data.platform, platform);
  assert.deepEqual(loginBodies(fake).map((b) => b.appid), [appid]);
  const id = fake.storage.get(storageKey);
  assert.match(id, /^[0-9a-f]{32}$/);
  const sent = fake.counts.requests.find((r) => r.what === 'GET /session');
  assert.equal(sent.header.sessionid, id);

  const until = await api.elevate();
  assert.ok(until > Date.now() / 1000, String(until));
  assert.equal((await api.request({ url: '/session' })).data.elevated_until, until);

  // Revoked behind its back: the 401 is seen, one re-login (a new user's code
  // now: a login code is good once), one retry.
  fake.asUser('');
  assert.equal((await raw('DELETE', `${multiUrl}/session`, { sessionid: id })).status, 204);
  const renewed = await api.request({ url: '/session' });
  assert.equal(renewed.statusCode, 200);
  assert.equal(renewed.data.appid, appid);
  const newId = fake.storage.get(storageKey);
  assert.match(newId, /^[0-9a-f]{32}$/);
  assert.notEqual(newId, id);
  assert.equal(fake.counts.login, 3, 'the login, the step-up, the re-login');
  assert.equal(fake.calls('GET /session'), 4, 'two, one failed try, one retry');

  await api.logout();
  assert.ok(!fake.storage.get(storageKey), 'forgotten');
  assert.equal(fake.calls('DELETE /session'), 1);
  assert.equal((await raw('GET', `${multiUrl}/session`, { sessionid: newId })).status, 401, 'dead on the server');
}

test('a qq global: the unchanged client logs in to the QQ app and makes guarded requests', T, async () => {
  const fake = fakePlatform('qq', { appid: APPIDS.qq });
  assert.equal(typeof global.wx, 'undefined');
  await roundTrip(fake, APPIDS.qq, 'qq', 'qq-key');
  assert.equal(wxs.counts.login + wxs.counts.requests.length, 0, 'the earlier fake wx saw nothing');
});

test('wecom: the code comes from wx.qy.login; without WeCom\'s runtime login rejects login_failed', T, async () => {
  const fake = fakeWx({ appid: APPIDS.wecom, wecom: true });
  const api = createClient({ baseUrl: multiUrl, wecom: true, storageKey: 'wecom' });
  const res = await api.request({ url: '/session' });
  assert.equal(res.statusCode, 200, JSON.stringify(res.data));
  assert.equal(res.data.platform, 'wecom');
  assert.equal(res.data.corpid, 'ww_test_corp');
  assert.equal(fake.counts.qyLogin, 1);
  assert.equal(fake.counts.login, 0, 'wx.login is not a WeCom code');
  fakeWx({ appid: APPIDS.wecom });
  const outside = createClient({ baseUrl: multiUrl, wecom: true, storageKey: 'wecom-outside' });
  await assert.rejects(outside.request({ url: '/session' }), (e) => e.code === 'login_failed' && /qy\.login/.test(e.message));
});

test("a tt global: Douyin's appid from getEnvInfoSync, its login and requests", T, async () => {
  const fake = fakePlatform('tt', { appid: APPIDS.douyin });
  assert.equal(typeof fake.api.getAccountInfoSync, 'undefined');
  await roundTrip(fake, APPIDS.douyin, 'douyin', 'tt-key');
});

for (const httpErrorsFail of [false, true]) {
  test(`a my global (Alipay's shapes${httpErrorsFail ? ', HTTP errors through fail' : ''}): getAuthCode, headers/status, storage objects`, T, async () => {
    const fake = fakePlatform('my', { appid: APPIDS.alipay, httpErrorsFail });
    await roundTrip(fake, APPIDS.alipay, 'alipay', `my-key-${httpErrorsFail}`);
    assert.equal(fake.counts.scopes, 'auth_base', 'the silent scope');
    for (const r of fake.counts.requests) {
      assert.ok(!('header' in r.options), `${r.what}: headers, not header`);
      assert.equal(r.options.dataType, 'text', `${r.what}: text, parsed by the client`);
    }
    const login = fake.counts.requests.find((r) => r.what === 'POST /login').options;
    assert.equal(typeof login.data, 'string', 'the JSON body as text');
    assert.equal(login.headers['content-type'], 'application/json');
    assert.deepEqual(Object.keys(JSON.parse(login.data)), ['code', 'appid']);
  });
}

test('Alipay: a failed getAuthCode rejects login_failed; a caller\'s dataType is left alone', T, async () => {
  const fake = fakePlatform('my', { appid: APPIDS.alipay });
  const api = createClient({ baseUrl: multiUrl });
  fake.failLogin(true);
  await assert.rejects(api.request({ url: '/session' }), (e) => e.code === 'login_failed' && /取消/.test(e.message));
  fake.failLogin(false);
  const res = await api.request({ url: '/session', dataType: 'json' });
  assert.equal(res.statusCode, 200);
  assert.equal(res.data.platform, 'alipay');
  assert.equal(fake.counts.requests.find((r) => r.what === 'GET /session').options.dataType, 'json');
});

test('createClient({ api }) is used instead of the globals; with neither, createClient throws', T, async () => {
  const ali = fakePlatform('my', { appid: APPIDS.alipay });
  delete global.my;
  global.wx = wxs.api; // a global that is not the one asked for
  const api = createClient({ baseUrl: multiUrl, api: ali.api }); // told apart by its shape: getAuthCode, no login
  assert.equal((await api.request({ url: '/session' })).data.platform, 'alipay');
  assert.equal(ali.counts.login, 1);
  assert.equal(wxs.counts.login + wxs.counts.requests.length, 0);
  delete global.wx;
  assert.throws(() => createClient({ baseUrl }), (e) => e instanceof TypeError && /pass createClient\({ api }\)/.test(e.message));
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
