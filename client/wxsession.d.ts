export interface ClientOptions {
  /** The wxsession server, e.g. "https://api.example.com". */
  baseUrl: string;
  /** Request header that carries the session id (server's session.header). */
  header?: string;
  /** wx storage key under which the session id is kept. */
  storageKey?: string;
}

export interface RequestOptions {
  /** Path relative to baseUrl, e.g. "/session". */
  url: string;
  method?: 'GET' | 'POST' | 'PUT' | 'DELETE' | 'PATCH' | 'HEAD' | 'OPTIONS';
  data?: unknown;
  header?: Record<string, string>;
}

export interface Response<T = any> {
  statusCode: number;
  data: T;
  header: Record<string, string>;
}

/** Rejections carry the server's `error` code, or network_error / login_failed. */
export interface ClientError extends Error {
  code: string;
}

export interface UserInfoPayload {
  rawData: string;
  signature: string;
  encryptedData: string;
  iv: string;
}

export interface Client {
  request<T = any>(options: RequestOptions): Promise<Response<T>>;
  login(): Promise<string>;
  logout(): Promise<void>;
  userInfo(payload: UserInfoPayload): Promise<Response>;
}

export function createClient(options: ClientOptions): Client;
