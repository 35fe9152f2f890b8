// A small client of kefu's REST API (docs/api.md). Every call carries the
// agent's bearer token; errors come back as ApiError with the API's code.

const TOKEN_KEY = "kefu.console.token";

export class ApiError extends Error {
  constructor(status, code, message, retryAfter) {
    super(message || code || "HTTP " + status);
    this.status = status;
    this.code = code || "";
    this.retryAfter = retryAfter || 0;
  }
}

let token = (() => {
  try { return localStorage.getItem(TOKEN_KEY) || ""; } catch (e) { return ""; }
})();
let onUnauthorized = () => {};

export function getToken() { return token; }

export function setToken(t) {
  token = t || "";
  try {
    if (token) localStorage.setItem(TOKEN_KEY, token);
    else localStorage.removeItem(TOKEN_KEY);
  } catch (e) { /* storage disabled: the login lasts as long as the page */ }
}

// whenUnauthorized sets what happens when the server refuses the token
// (expired, revoked, agent deactivated): back to the login screen.
export function whenUnauthorized(f) { onUnauthorized = f; }

async function errorOf(resp) {
  let code = "", message = "";
  try {
    const body = await resp.json();
    if (body && body.error) { code = body.error.code; message = body.error.message; }
  } catch (e) { /* not JSON */ }
  const ra = parseInt(resp.headers.get("Retry-After") || "0", 10) || 0;
  return new ApiError(resp.status, code, message, ra);
}

// request sends method path (under /api/v1) with an optional JSON body
// and answers the decoded JSON (null for 204).
export async function request(method, path, body, opts) {
  const headers = {};
  if (token) headers["Authorization"] = "Bearer " + token;
  const init = { method, headers, cache: "no-store" };
  if (body !== undefined && body !== null) {
    if (body instanceof FormData) {
      init.body = body; // the browser sets the multipart boundary
    } else {
      headers["Content-Type"] = "application/json";
      init.body = JSON.stringify(body);
    }
  }
  let resp;
  try {
    resp = await fetch("/api/v1" + path, init);
  } catch (e) {
    throw new ApiError(0, "network", e && e.message);
  }
  if (!resp.ok) {
    const err = await errorOf(resp);
    if (resp.status === 401 && !(opts && opts.login)) onUnauthorized();
    throw err;
  }
  if (resp.status === 204) return null;
  return resp.json();
}

export const get = (path) => request("GET", path);
export const post = (path, body) => request("POST", path, body === undefined ? null : body);
export const patch = (path, body) => request("PATCH", path, body);

export async function login(email, password) {
  const res = await request("POST", "/auth/login", { email, password }, { login: true });
  setToken(res.token);
  return res;
}

// blob fetches an authorised download (media) as a Blob.
export async function blob(path) {
  let resp;
  try {
    resp = await fetch("/api/v1" + path, { headers: { Authorization: "Bearer " + token } });
  } catch (e) {
    throw new ApiError(0, "network", e && e.message);
  }
  if (!resp.ok) {
    const err = await errorOf(resp);
    if (resp.status === 401) onUnauthorized();
    throw err;
  }
  return resp.blob();
}

// clientID returns a fresh id for a message (the API stores a retry with
// the same id once). crypto.getRandomValues works outside secure contexts,
// unlike crypto.randomUUID.
export function clientID() {
  const b = new Uint8Array(16);
  crypto.getRandomValues(b);
  return "c-" + Array.from(b, (x) => x.toString(16).padStart(2, "0")).join("");
}
