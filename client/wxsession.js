'use strict';
/**
 * wxsession mini-program client: wx.login → POST /login → a stored session id
 * sent in a header on every request, and a transparent re-login when the
 * server says the session is gone. Dependency-free CommonJS.
 *
 *   const { createClient } = require('./wxsession');
 *   const api = createClient({ baseUrl: 'https://api.example.com' });
 *   api.request({ url: '/orders' }).then(({ statusCode, data }) => { ... });
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

function createClient(options) {
  const opts = options || {};
  const baseUrl = String(opts.baseUrl || '').replace(/\/+$/, '');
  const header = opts.header || 'sessionid';
  const storageKey = opts.storageKey || 'wxsession';
  const device = opts.device;
  const onSessionEnded = typeof opts.onSessionEnded === 'function' ? opts.onSessionEnded : noop;
  let loginInFlight = null;

  function stored() {
    try {
      return wx.getStorageSync(storageKey) || '';
    } catch (e) {
      return ''; // unreadable storage: as if logged out
    }
  }

  function forget() {
    try {
      wx.removeStorageSync(storageKey);
    } catch (e) {
      // nothing more to do: the next request logs in again at worst
    }
  }

  /** One HTTP exchange through wx.request, as a Promise; never retried here. */
  function send(request, sessionId) {
    return new Promise((resolve, reject) => {
      const call = {};
      Object.keys(request).forEach((key) => {
        if (OWN_OPTIONS.indexOf(key) < 0) call[key] = request[key];
      });
      call.url = baseUrl + request.url;
      call.method = request.method || 'GET';
      call.header = Object.assign({}, request.header);
      if (sessionId) call.header[header] = sessionId;
      call.success = (res) => {
        resolve({ statusCode: res.statusCode, data: res.data, header: res.header });
      };
      call.fail = (err) => {
        reject(clientError('network_error', (err && err.errMsg) || 'request failed'));
      };
      wx.request(call);
    });
  }

  function wxLogin() {
    return new Promise((resolve, reject) => {
      wx.login({
        success(res) {
          if (res && res.code) resolve(res.code);
          else reject(clientError('login_failed', 'wx.login gave no code'));
        },
        fail(err) {
          reject(clientError('login_failed', (err && err.errMsg) || 'wx.login failed'));
        },
      });
    });
  }

  /** wx.login → POST /login → storage. Concurrent callers share one login. */
  function login() {
    if (loginInFlight) return loginInFlight;
    const attempt = wxLogin()
      .then((code) =>
        send({
          url: '/login',
          method: 'POST',
          data: device ? { code, device } : { code },
          header: { 'content-type': 'application/json' },
        })
      )
      .then((res) => {
        const body = res.data && typeof res.data === 'object' ? res.data : {};
        if (res.statusCode === 200 && typeof body.sessionid === 'string' && body.sessionid) {
          try {
            wx.setStorageSync(storageKey, body.sessionid);
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
    const first = stored();
    return Promise.resolve(first || login()).then((id) =>
      send(r, id).then((res) => {
        const ended = endedReason(res);
        if (ended) {
          if (stored() === id) forget();
          onSessionEnded(ended);
          throw clientError(ended, res.data.message, res.statusCode);
        }
        if (!isSessionError(res)) return res;
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
   * that logged in again, is left alone (it is live and in use).
   */
  function logout() {
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
   * Step-up before a sensitive action: a fresh wx.login code, posted to
   * POST /session/elevate with the session (logged in first if there is none).
   * Resolves the unix seconds until which the session is elevated; rejects
   * with the server's code otherwise (identity_mismatch: the WeChat user on
   * this phone is not the session's), or with the ended reason as request does.
   */
  function elevate() {
    return Promise.resolve(stored() || login())
      .then(() => wxLogin())
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
