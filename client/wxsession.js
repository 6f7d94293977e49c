'use strict';
/**
 * wxsession mini-program client: wx.login → POST /login → a stored session id
 * sent in a header on every request, and a transparent re-login when the
 * server says the session is gone. Dependency-free CommonJS.
 *
 *   const { createClient } = require('./wxsession');
 *   const api = createClient({ baseUrl: 'https://api.example.com' });
 *   const { statusCode, data } = await api.request({ url: '/orders' });
 */

const SESSION_ERRORS = ['invalid_session', 'session_required'];

function clientError(code, message) {
  const error = new Error(message || code);
  error.code = code;
  return error;
}

function createClient(options) {
  const opts = options || {};
  const baseUrl = String(opts.baseUrl || '').replace(/\/+$/, '');
  const header = opts.header || 'sessionid';
  const storageKey = opts.storageKey || 'wxsession';
  let loginInFlight = null;

  function stored() {
    return wx.getStorageSync(storageKey) || '';
  }

  /** One HTTP exchange through wx.request, as a Promise; never retried here. */
  function send(request, sessionId) {
    const headers = Object.assign({}, request.header);
    if (sessionId) headers[header] = sessionId;
    return new Promise((resolve, reject) => {
      wx.request({
        url: baseUrl + request.url,
        method: request.method || 'GET',
        data: request.data,
        header: headers,
        success(res) {
          resolve({ statusCode: res.statusCode, data: res.data, header: res.header });
        },
        fail(err) {
          reject(clientError('network_error', err && err.errMsg));
        },
      });
    });
  }

  /** wx.login → POST /login → storage. Concurrent callers share one login. */
  function login() {
    if (loginInFlight) return loginInFlight;
    loginInFlight = (async () => {
      const code = await new Promise((resolve, reject) => {
        wx.login({
          success(res) {
            if (res && res.code) resolve(res.code);
            else reject(clientError('login_failed', 'wx.login gave no code'));
          },
          fail(err) {
            reject(clientError('login_failed', err && err.errMsg));
          },
        });
      });
      const res = await send({
        url: '/login',
        method: 'POST',
        data: { code },
        header: { 'content-type': 'application/json' },
      });
      const body = res.data || {};
      if (res.statusCode === 200 && body.sessionid) {
        wx.setStorageSync(storageKey, body.sessionid);
        return body.sessionid;
      }
      throw clientError(body.error || 'login_failed', body.message);
    })();
    const done = () => {
      loginInFlight = null;
    };
    loginInFlight.then(done, done);
    return loginInFlight;
  }

  function isSessionError(res) {
    return res.statusCode === 401 && res.data && SESSION_ERRORS.includes(res.data.error);
  }

  /**
   * Like wx.request, as a Promise of { statusCode, data, header }. Logs in first
   * when no session is stored; on a 401 invalid_session/session_required, logs
   * in once and retries once. Every other answer (503 included) is passed on.
   */
  async function request(request) {
    let id = stored() || (await login());
    let res = await send(request, id);
    if (!isSessionError(res)) return res;
    const current = stored();
    if (current && current !== id) {
      id = current; // another request already logged in again
    } else {
      if (current === id) wx.removeStorageSync(storageKey);
      id = await login();
    }
    res = await send(request, id);
    return res;
  }

  /** DELETE /session, then forget the id even if the server could not be reached. */
  async function logout() {
    const id = stored();
    try {
      if (id) await send({ url: '/session', method: 'DELETE' }, id);
    } catch (e) {
      // unreachable server: the id is forgotten all the same
    } finally {
      wx.removeStorageSync(storageKey);
    }
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

  return { request, login, logout, userInfo };
}

module.exports = { createClient };
