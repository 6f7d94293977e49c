export interface ClientOptions {
  /** The wxsession server, e.g. "https://api.example.com" (a trailing slash is ignored). */
  baseUrl: string;
  /** Request header that carries the session id (the server's session.header). Default "sessionid". */
  header?: string;
  /** Storage key under which the session id is kept. Default "wxsession". */
  storageKey?: string;
  /**
   * The device type logins are for ("phone", "pad", "pc", …: 1–32 of a-z, 0-9, _ and -).
   * Sessions remember it; with the server's session.one_per_device a login ends the
   * user's other session of the same device.
   */
  device?: string;
  /**
   * Called with "session_replaced", "session_revoked" or "user_banned" when a
   * request finds its session ended on purpose; the stored id is dropped and the
   * request rejects with that code. The client does not log in again by itself.
   */
  onSessionEnded?: (reason: string) => void;
  /**
   * The app POST /login logs in to, sent as its `appid`. Left out: the running
   * mini-program's own, from `getAccountInfoSync().miniProgram.appId` (Douyin:
   * `getEnvInfoSync().microapp.appId`) where the base library has it, else none.
   * `null` or "": none (a server with one app needs none; with several, a login
   * without one is 400 unknown_app).
   */
  appid?: string | null;
  /**
   * A WeCom (企业微信) mini-program: login codes come from `wx.qy.login`, as the
   * server's wecom apps take them. Default false.
   */
  wecom?: boolean;
  /**
   * The platform API to use. Default: the first of the globals `wx`, `qq`, `tt`,
   * `my` that exists. Alipay's shapes (`my`: getAuthCode, `headers`/`status`,
   * storage objects) are recognised by `my` itself, or an object with
   * `getAuthCode` and no `login`; anything else is taken as WeChat-shaped
   * (`uni`, `Taro`).
   */
  api?: object;
}

export interface RequestOptions {
  /** Path relative to baseUrl, e.g. "/session". */
  url: string;
  method?: 'GET' | 'POST' | 'PUT' | 'DELETE' | 'PATCH' | 'HEAD' | 'OPTIONS' | 'TRACE' | 'CONNECT';
  data?: unknown;
  /** Extra headers; the session header is set by the client. */
  header?: Record<string, string>;
  /**
   * Any other request option (timeout, dataType, responseType, enableHttp2, ...) is passed
   * through to wx.request / qq.request / tt.request / my.request.
   */
  timeout?: number;
  dataType?: string;
  responseType?: 'text' | 'arraybuffer';
  [option: string]: unknown;
}

export interface Response<T = any> {
  statusCode: number;
  data: T;
  header: Record<string, string>;
}

/**
 * Rejections carry the server's `error` code for a failed login (e.g. "invalid_code",
 * "unknown_app", "store_unavailable"), or "network_error" (the platform's request failed) /
 * "login_failed" (wx.login / my.getAuthCode failed, or /login answered neither a session
 * id nor an error code).
 */
export interface ClientError extends Error {
  code: 'network_error' | 'login_failed' | 'elevate_failed' | string;
  /** The HTTP status of a failed POST /login. */
  statusCode?: number;
}

export interface UserInfoPayload {
  rawData: string;
  signature: string;
  encryptedData: string;
  iv: string;
}

export interface Client {
  /** Like wx.request, as a Promise; logs in when needed, re-logs in and retries at most once on a 401 session error. */
  request<T = any>(options: RequestOptions): Promise<Response<T>>;
  /** wx.login (my.getAuthCode on Alipay) → POST /login → storage; concurrent callers share one login. Resolves the session id. */
  login(): Promise<string>;
  /** DELETE /session, then forgets the stored id (even when the server is unreachable). Never rejects. A request already under way does not log in again. */
  logout(): Promise<void>;
  /** POST /session/userinfo (through request) with what wx.getUserProfile returned. */
  userInfo<T = any>(payload: UserInfoPayload): Promise<Response<T>>;
  /**
   * Step-up: wx.login again, then POST /session/elevate with the fresh code (through
   * request). Resolves the unix seconds until which the session is elevated; rejects
   * with the server's code, e.g. "identity_mismatch" (another WeChat user's code).
   */
  elevate(): Promise<number>;
}

export function createClient(options: ClientOptions): Client;
