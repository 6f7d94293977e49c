'use strict';
/**
 * wxsession mini-program client: the platform's login → POST /login → a stored
 * session id sent in a header on every request, and a transparent re-login when
 * the server says the session is gone. Dependency-free CommonJS.
 *
 *   const { createClient } = require('./wxsession');
 *   const api = createClient({ baseUrl: 'https://api.example.com' });
 *   api.request({ url: '/orders' }).then(({ statusCode, data }) => { ... });
 *
 * Runs unchanged on WeChat (`wx`), QQ (`qq`), Douyin (`tt`) and Alipay (`my`):
 * the first of those globals that exists is used (see `platformOf` below).
 *
 * Written with plain Promises (no async/await, no Array.prototype.includes) so
 * that it runs unchanged under the devtools' plain "ES6 → ES5" compile mode,
 * which has no regeneratorRuntime.
 */

/** 401 bodies that mean "log in again"; every other 401 is handed back. */
const SESSION_ERRORS = ['invalid_session', 'session_required'];
// A session ended on purpose: logging in again by itself would undo it (two
// phones of one device type would take turns ending each other).
const ENDED_ERRORS = ['session_replaced', 'session_revoked', 'user_banned'];

/** wx.request options the client owns; everything else is passed through. */
const OWN_OPTIONS = ['url', 'header', 'success', 'fail', 'complete'];

function clientError(code, message, statusCode) {
  const error = new Error(message || code);
  error.code = code;
  if (statusCode !== undefined) error.statusCode = statusCode;
  return error;
}

function noop() {}

/** A JSON text as its value; anything else (not JSON, not text) as it is. */
function parsed(data) {
  if (typeof data !== 'string' || !data) return data;
  try {
    return JSON.parse(data);
  } catch (e) {
    return data; // not JSON: handed on as text, as wx.request does
  }
}

/**
 * The running mini-program's own appid, or '' when the platform cannot say.
 * Every call is guarded: older base libraries lack these functions or throw.
 */
function ownAppid(api) {
  try {
    // wx, qq and my: getAccountInfoSync().miniProgram.appId (WeChat base library
    // 2.2.2+, Alipay 2.7.17+: https://opendocs.alipay.com/mini/api/my.getAccountInfoSync).
    const info = typeof api.getAccountInfoSync === 'function' ? api.getAccountInfoSync() : null;
    const id = info && info.miniProgram && info.miniProgram.appId;
    if (typeof id === 'string' && id) return id;
  } catch (e) {
    // fall through
  }
  try {
    // tt has no getAccountInfoSync: getEnvInfoSync().microapp.appId (base library 2.21.0+,
    // https://developer.open-douyin.com/docs/resource/zh-CN/mini-app/develop/api/foundation/env/get-env-info-sync).
    const env = typeof api.getEnvInfoSync === 'function' ? api.getEnvInfoSync() : null;
    const id = env && env.microapp && env.microapp.appId;
    if (typeof id === 'string' && id) return id;
  } catch (e) {
    // fall through
  }
  return '';
}

/**
 * The native platform globals, in the order they are tried. `typeof` because
 * reading a global that does not exist throws; QQ may define `wx` too, which is
 * fine: its `wx` is shaped as WeChat's.
 */
function nativeApis() {
  return [
    ['wx', typeof wx === 'object' && wx ? wx : null],
    ['qq', typeof qq === 'object' && qq ? qq : null],
    ['tt', typeof tt === 'object' && tt ? tt : null],
    ['my', typeof my === 'object' && my ? my : null],
  ];
}

/**
 * The platform behind one shape, chosen once per client:
 *   login(): Promise of a login code (rejects login_failed)
 *   request(call): Promise of { statusCode, data, header } (rejects network_error),
 *     `call` being wx.request's options without callbacks
 *   get(key) / set(key, value) / remove(key): synchronous storage (may throw)
 *   accountAppid(): the mini-program's own appid, or ''
 * `api` is the caller's `api` option, else the first native global there is.
 * WeChat, QQ and Douyin share one shape (and so do uni / Taro, which copy
 * WeChat's); Alipay differs in each of the three.
 */
function platformOf(api, wecom) {
  const natives = nativeApis();
  let native = null; // [name, object]: the global used, or the one `api` is
  for (let i = 0; i < natives.length && !native; i += 1) {
    if (natives[i][1] && (!api || api === natives[i][1])) native = natives[i];
  }
  const target = api || (native && native[1]);
  const name = native ? native[0] : 'api';
  if (!target) {
    throw new TypeError('wxsession: no wx, qq, tt or my global here; pass createClient({ api })');
  }
  // Alipay's `my` has no login: its code comes from getAuthCode.
  const alipay =
    name === 'my' || (typeof target.login !== 'function' && typeof target.getAuthCode === 'function');
  return alipay ? alipayPlatform(target) : wechatPlatform(target, name, wecom);
}

/**
 * wx, qq and tt (and uni / Taro): WeChat's shapes.
 *   wx: https://developers.weixin.qq.com/miniprogram/dev/api/open-api/login/wx.login.html
 *   qq: https://q.qq.com/wiki/develop/miniprogram/API/open_port/port_login.html
 *   tt: https://developer.open-douyin.com/docs/resource/zh-CN/mini-app/develop/api/open-interface/log-in/tt-login
 *       (only a user logged in to the Douyin app gets a `code`; otherwise
 *       `anonymousCode` alone, which cannot log in here: login_failed),
 *       https://developer.open-douyin.com/docs/resource/zh-CN/mini-app/develop/api/network/http/tt-request
 * With `wecom` (a WeCom mini-program), the code comes from wx.qy.login, which
 * only WeCom's runtime has:
 *   https://developers.weixin.qq.com/miniprogram/dev/dev_wxwork/dev-doc/qywx-api/login/wxqylogin.html
 */
function wechatPlatform(api, name, wecom) {
  const login = wecom ? api.qy && api.qy.login : api.login;
  const what = wecom ? `${name}.qy.login` : `${name}.login`;
  return {
    login() {
      return new Promise((resolve, reject) => {
        if (typeof login !== 'function') {
          reject(clientError('login_failed', `${what} is not available here (not in WeCom?)`));
          return;
        }
        login.call(wecom ? api.qy : api, {
          success(res) {
            if (res && res.code) resolve(res.code);
            else reject(clientError('login_failed', `${what} gave no code`));
          },
          fail(err) {
            reject(clientError('login_failed', (err && err.errMsg) || `${what} failed`));
          },
        });
      });
    },
    request(call) {
      return new Promise((resolve, reject) => {
        const options = Object.assign({}, call);
        options.success = (res) => {
          resolve({ statusCode: res.statusCode, data: res.data, header: res.header });
        };
        options.fail = (err) => {
          reject(clientError('network_error', (err && err.errMsg) || 'request failed'));
        };
        api.request(options);
      });
    },
    get: (key) => api.getStorageSync(key) || '',
    set: (key, value) => api.setStorageSync(key, value),
    remove: (key) => api.removeStorageSync(key),
    accountAppid: () => ownAppid(api),
  };
}

/** Alipay's `my`, as WeChat-shaped as the rest. */
function alipayPlatform(api) {
  return {
    // No my.login: the code is getAuthCode's authCode, with the silent scope
    // auth_base (no prompt), which the server trades at alipay.system.oauth.token.
    // Failures carry error / errorMessage, not errMsg.
    // https://opendocs.alipay.com/mini/api/openapi-authorize
    login() {
      return new Promise((resolve, reject) => {
        api.getAuthCode({
          scopes: 'auth_base',
          success(res) {
            if (res && res.authCode) resolve(res.authCode);
            else reject(clientError('login_failed', 'my.getAuthCode gave no authCode'));
          },
          fail(err) {
            reject(clientError('login_failed', (err && (err.errorMessage || err.errMsg)) || 'my.getAuthCode failed'));
          },
        });
      });
    },
    // my.request (https://opendocs.alipay.com/mini/api/owycmh) differs from wx.request:
    // - request headers are `headers`, not `header` (default content-type
    //   application/json; keys and values must be strings);
    // - the answer is { status, data, headers }, not { statusCode, data, header };
    // - an object `data` is turned into JSON only for POST with that content-type:
    //   the client sends JSON text itself for every method but GET;
    // - `dataType` defaulted to 'json' before base library 2.9.5, and then fails
    //   (error 14) on a body that is not JSON, such as a 204's empty one: unless
    //   the caller sets it, the text is asked for and parsed here, as wx does;
    // - an HTTP error status may come through `fail` (error 19, "HTTP 错误")
    //   rather than `success`: a `fail` that carries a status is an answer.
    request(call) {
      return new Promise((resolve, reject) => {
        const options = {};
        Object.keys(call).forEach((key) => {
          if (key !== 'header') options[key] = call[key];
        });
        options.headers = Object.assign({}, call.headers, call.header);
        const ownParse = call.dataType === undefined;
        if (ownParse) options.dataType = 'text';
        if (isJsonBody(options)) options.data = JSON.stringify(options.data);
        const answer = (res) => ({
          statusCode: res.status,
          data: ownParse ? parsed(res.data) : res.data,
          header: res.headers,
        });
        options.success = (res) => resolve(answer(res));
        options.fail = (err) => {
          if (err && typeof err.status === 'number' && err.status >= 100 && err.status < 600) {
            resolve(answer(err));
          } else {
            reject(clientError('network_error', (err && (err.errorMessage || err.errMsg)) || 'request failed'));
          }
        };
        api.request(options);
      });
    },
    // Storage takes and gives objects: getStorageSync({ key }) → { data },
    // setStorageSync({ key, data }), removeStorageSync({ key }).
    // https://opendocs.alipay.com/mini/api/ox0wna (getStorageSync)
    get(key) {
      const res = api.getStorageSync({ key });
      return (res && res.data) || '';
    },
    set: (key, value) => api.setStorageSync({ key, data: value }),
    remove: (key) => api.removeStorageSync({ key }),
    accountAppid: () => ownAppid(api),
  };
}

/** Would my.request need this call's `data` as JSON text? (see alipayPlatform) */
function isJsonBody(options) {
  const data = options.data;
  if (String(options.method || 'GET').toUpperCase() === 'GET') return false;
  if (data === null || typeof data !== 'object') return false;
  if (typeof ArrayBuffer !== 'undefined' && data instanceof ArrayBuffer) return false;
  let type = 'application/json'; // my.request's default
  Object.keys(options.headers).forEach((key) => {
    if (key.toLowerCase() === 'content-type') type = String(options.headers[key]);
  });
  return type.toLowerCase().indexOf('application/json') === 0;
}

function createClient(options) {
  const opts = options || {};
  const baseUrl = String(opts.baseUrl || '').replace(/\/+$/, '');
  const header = opts.header || 'sessionid';
  const storageKey = opts.storageKey || 'wxsession';
  const device = opts.device;
  const platform = platformOf(opts.api, !!opts.wecom);
  // Left out: the mini-program's own; '' or null: none (a one-app server needs none).
  const appid = opts.appid === undefined ? platform.accountAppid() : opts.appid || '';
  const onSessionEnded = typeof opts.onSessionEnded === 'function' ? opts.onSessionEnded : noop;
  let loginInFlight = null;
  // logout() calls so far: a request under way when one is made does not log
  // in again on the 401 that logout may cause (that would undo the logout).
  let logouts = 0;

  function stored() {
    try {
      return platform.get(storageKey) || '';
    } catch (e) {
      return ''; // unreadable storage: as if logged out
    }
  }

  function forget() {
    try {
      platform.remove(storageKey);
    } catch (e) {
      // nothing more to do: the next request logs in again at worst
    }
  }

  /** One HTTP exchange through the platform's request, as a Promise; never retried here. */
  function send(request, sessionId) {
    const call = {};
    Object.keys(request).forEach((key) => {
      if (OWN_OPTIONS.indexOf(key) < 0) call[key] = request[key];
    });
    call.url = baseUrl + request.url;
    call.method = request.method || 'GET';
    call.header = Object.assign({}, request.header);
    if (sessionId) call.header[header] = sessionId;
    return platform.request(call);
  }

  /** The platform's login (wx.login, my.getAuthCode, ...) → POST /login → storage. Concurrent callers share one login. */
  function login() {
    if (loginInFlight) return loginInFlight;
    const attempt = platform
      .login()
      .then((code) => {
        const data = { code };
        if (appid) data.appid = appid;
        if (device) data.device = device;
        return send({
          url: '/login',
          method: 'POST',
          data,
          header: { 'content-type': 'application/json' },
        });
      })
      .then((res) => {
        const body = res.data && typeof res.data === 'object' ? res.data : {};
        if (res.statusCode === 200 && typeof body.sessionid === 'string' && body.sessionid) {
          try {
            platform.set(storageKey, body.sessionid);
          } catch (e) {
            // storage full or unavailable: this request still has its session
          }
          return body.sessionid;
        }
        throw failure(res, 'login_failed', `POST /login answered ${res.statusCode} without a session id`);
      });
    loginInFlight = attempt;
    // Settles before any caller's own continuation runs (registered first).
    const done = () => {
      if (loginInFlight === attempt) loginInFlight = null;
    };
    attempt.then(done, done);
    return attempt;
  }

  /** The server's error code and message of a failed call, else `fallback` and `message`. */
  function failure(res, fallback, message) {
    const body = res.data && typeof res.data === 'object' ? res.data : {};
    return clientError(
      typeof body.error === 'string' && body.error ? body.error : fallback,
      body.message || message,
      res.statusCode
    );
  }

  function isSessionError(res) {
    return (
      res.statusCode === 401 &&
      !!res.data &&
      typeof res.data === 'object' &&
      SESSION_ERRORS.indexOf(res.data.error) >= 0
    );
  }

  function endedReason(res) {
    const error = res.data && typeof res.data === 'object' ? res.data.error : undefined;
    return (res.statusCode === 401 || res.statusCode === 403) && ENDED_ERRORS.indexOf(error) >= 0
      ? error
      : '';
  }

  /**
   * Like wx.request, as a Promise of { statusCode, data, header }. Logs in first
   * when no session is stored; on a 401 invalid_session/session_required, logs
   * in once and retries once. A session ended on purpose (session_replaced,
   * session_revoked, user_banned) is forgotten and the promise rejects with
   * that code, after onSessionEnded(reason): no login of its own. Every other
   * answer (503 included) is passed on.
   */
  function request(req) {
    const r = req || {};
    const epoch = logouts;
    const first = stored();
    return Promise.resolve(first || login()).then((id) =>
      send(r, id).then((res) => {
        const ended = endedReason(res);
        if (ended) {
          if (stored() === id) forget();
          onSessionEnded(ended);
          throw clientError(ended, res.data.message, res.statusCode);
        }
        if (!isSessionError(res) || logouts !== epoch) return res;
        const current = stored();
        let renewed;
        if (current && current !== id) {
          renewed = current; // a concurrent request has logged in again already
        } else {
          if (current === id) forget();
          renewed = login();
        }
        // The retry's answer is final, whatever it is: at most one re-login.
        return Promise.resolve(renewed).then((newId) => send(r, newId));
      })
    );
  }

  /**
   * DELETE /session, then forget the id even if the server could not be
   * reached. A login still in flight is waited for first, so the session it
   * creates is logged out too instead of landing in storage afterwards. Only
   * the id logged out is forgotten: a newer one, stored meanwhile by a request
   * that logged in again, is left alone (it is live and in use). A request
   * already under way gets its answer as it is, a 401 included: it does not
   * log in again.
   */
  function logout() {
    logouts += 1;
    const pending = loginInFlight ? loginInFlight.catch(noop) : Promise.resolve();
    let id = '';
    return pending
      .then(() => {
        id = stored();
        return id ? send({ url: '/session', method: 'DELETE' }, id) : null;
      })
      .catch(noop) // unreachable server: the id is forgotten all the same
      .then(() => {
        const current = stored();
        if (!current || current === id) forget();
      });
  }

  /** POST /session/userinfo with what wx.getUserProfile returned. */
  function userInfo(payload) {
    const p = payload || {};
    return request({
      url: '/session/userinfo',
      method: 'POST',
      data: { rawData: p.rawData, signature: p.signature, encryptedData: p.encryptedData, iv: p.iv },
      header: { 'content-type': 'application/json' },
    });
  }

  /**
   * Step-up before a sensitive action: a fresh login code (wx.login, my.getAuthCode, ...), posted to
   * POST /session/elevate with the session (logged in first if there is none).
   * Resolves the unix seconds until which the session is elevated; rejects
   * with the server's code otherwise (identity_mismatch: the WeChat user on
   * this phone is not the session's), or with the ended reason as request does.
   */
  function elevate() {
    return Promise.resolve(stored() || login())
      .then(() => platform.login())
      .then((code) =>
        request({
          url: '/session/elevate',
          method: 'POST',
          data: { code },
          header: { 'content-type': 'application/json' },
        })
      )
      .then((res) => {
        const body = res.data && typeof res.data === 'object' ? res.data : {};
        if (res.statusCode === 200 && typeof body.elevated_until === 'number') {
          return body.elevated_until;
        }
        throw failure(
          res,
          'elevate_failed',
          `POST /session/elevate answered ${res.statusCode} without elevated_until`
        );
      });
  }

  return { request, login, logout, userInfo, elevate };
}

module.exports = { createClient };
