// The console's only way to talk to the server. Same-origin requests with the
// HttpOnly session cookie; state-changing requests carry the CSRF token, which lives
// only in this module's memory (never in localStorage, sessionStorage or a cookie).

export const session = {
  account: null,
  csrf: null,
  expiresAt: null,
  config: { registration: "closed", session_seconds: 0 },
};

let expiredHandler = () => {};
/** Called when a request answers 401 while logged in (the session expired). */
export function onSessionExpired(fn) {
  expiredHandler = fn;
}

export class ApiError extends Error {
  constructor(status, error, retryAfter) {
    super(error && error.message ? error.message : `The server answered ${status}.`);
    this.name = "ApiError";
    this.status = status;
    this.type = error?.type ?? null;
    this.code = error?.code ?? null;
    this.param = error?.param ?? null;
    this.detail = error?.detail ?? null;
    this.retryAfter = retryAfter;
  }

  /** The message for people, with a retry hint on 429/503. */
  get friendly() {
    let msg = this.message;
    if ((this.status === 429 || this.status === 503) && this.retryAfter != null) {
      msg += ` Try again in ${this.retryAfter} second${this.retryAfter === 1 ? "" : "s"}.`;
    }
    return msg;
  }
}

export function errorText(err) {
  if (err instanceof ApiError) return err.friendly;
  if (err && err.name === "AbortError") return "The request was cancelled.";
  if (err instanceof TypeError) return "Could not reach the server. Check your connection and try again.";
  return (err && err.message) || "Something went wrong.";
}

function retryAfterOf(res) {
  const value = res.headers.get("Retry-After");
  if (!value) return null;
  const n = Number(value);
  if (Number.isFinite(n)) return Math.max(0, Math.ceil(n));
  const when = Date.parse(value);
  return Number.isNaN(when) ? null : Math.max(0, Math.ceil((when - Date.now()) / 1000));
}

async function errorOf(res) {
  let body = null;
  try {
    body = await res.json();
  } catch {
    body = null;
  }
  let error = body && typeof body.error === "object" ? { ...body.error } : null;
  if (!error && body && Array.isArray(body.detail)) error = { message: null };
  if (error && body && Array.isArray(body.detail)) {
    error.detail = body.detail;
    if (!error.message) {
      error.message = body.detail.map((d) => `${(d.loc || []).slice(1).join(".")}: ${d.msg}`).join("; ");
    }
  }
  return new ApiError(res.status, error, retryAfterOf(res));
}

function headersFor(method, hasBody) {
  const headers = { Accept: "application/json" };
  if (hasBody) headers["Content-Type"] = "application/json";
  if (method !== "GET" && method !== "HEAD" && session.csrf) headers["X-CSRF-Token"] = session.csrf;
  return headers;
}

function urlOf(path, query) {
  if (!query) return path;
  const params = new URLSearchParams();
  for (const [k, v] of Object.entries(query)) {
    if (v !== undefined && v !== null && v !== "") params.set(k, v);
  }
  const qs = params.toString();
  return qs ? `${path}?${qs}` : path;
}

/**
 * A 401 to a request made while logged in: the session expired. The first such answer
 * sends the person to the login page; every one is marked so pages don't repeat it.
 */
function checkExpired(res, path, method, hadSession, error) {
  const loggingIn = path.startsWith("/v1/auth/session") && method === "POST";
  if (res.status === 401 && hadSession && !loggingIn) {
    error.sessionExpired = true;
    if (session.account) {
      session.account = null;
      session.csrf = null;
      expiredHandler();
    }
  }
  return error;
}

/** JSON request. Resolves to the parsed body (null for 204); rejects with ApiError. */
export async function request(method, path, { body, query, signal } = {}) {
  const hasBody = body !== undefined;
  const hadSession = Boolean(session.account);
  const res = await fetch(urlOf(path, query), {
    method,
    credentials: "same-origin",
    headers: headersFor(method, hasBody),
    body: hasBody ? JSON.stringify(body) : undefined,
    signal,
  });
  if (!res.ok) {
    throw checkExpired(res, path, method, hadSession, await errorOf(res));
  }
  if (res.status === 204) return null;
  const text = await res.text();
  return text ? JSON.parse(text) : null;
}

export const get = (path, query, opts = {}) => request("GET", path, { ...opts, query });
export const post = (path, body) => request("POST", path, { body });
export const patch = (path, body) => request("PATCH", path, { body });
export const del = (path) => request("DELETE", path);

// ---- Session ----------------------------------------------------------------------

function setSession(data) {
  session.account = data.account;
  session.csrf = data.csrf_token;
  session.expiresAt = data.expires_at;
}

export async function loadConfig() {
  try {
    session.config = await get("/v1/auth/config");
  } catch {
    session.config = { registration: "closed", session_seconds: 0 };
  }
  return session.config;
}

/** Restores the session from the cookie; false when there is none. */
export async function restoreSession() {
  try {
    setSession(await get("/v1/auth/session"));
    return true;
  } catch (err) {
    if (err instanceof ApiError && err.status === 401) return false;
    throw err;
  }
}

export async function login(email, password) {
  setSession(await post("/v1/auth/session", { email, password }));
}

export async function logout() {
  try {
    await del("/v1/auth/session");
  } finally {
    session.account = null;
    session.csrf = null;
    session.expiresAt = null;
  }
}

export function register(email, password, name) {
  const body = { email, password };
  if (name) body.name = name;
  return post("/v1/auth/register", body);
}

// ---- Streaming chat ---------------------------------------------------------------

/**
 * POST /v1/chat/completions with stream: true, reading the SSE stream as it arrives.
 * onDelta(text) for each content piece, onUsage(usage) for the usage chunk.
 * Rejects with ApiError (HTTP error or an error event mid-stream) or AbortError.
 */
export async function streamChat(body, { signal, onDelta, onUsage, onOpen }) {
  const path = "/v1/chat/completions";
  const hadSession = Boolean(session.account);
  const res = await fetch(path, {
    method: "POST",
    credentials: "same-origin",
    headers: { ...headersFor("POST", true), Accept: "text/event-stream" },
    body: JSON.stringify(body),
    signal,
  });
  if (!res.ok) {
    throw checkExpired(res, path, "POST", hadSession, await errorOf(res));
  }
  if (onOpen) onOpen();
  const reader = res.body.getReader();
  const decoder = new TextDecoder();
  let buffer = "";
  let pendingCR = "";
  let done = false;

  const handleEvent = (data) => {
    if (data === "[DONE]") {
      done = true;
      return;
    }
    let chunk;
    try {
      chunk = JSON.parse(data);
    } catch {
      return;
    }
    if (chunk.error) throw new ApiError(chunk.error.status || res.status, chunk.error, null);
    const choice = chunk.choices && chunk.choices[0];
    const piece = choice && choice.delta && choice.delta.content;
    if (piece) onDelta(piece);
    if (chunk.usage && onUsage) onUsage(chunk.usage);
  };

  const handleBlock = (block) => {
    const dataLines = [];
    for (const line of block.split("\n")) {
      if (line.startsWith("data:")) dataLines.push(line.slice(line.startsWith("data: ") ? 6 : 5));
    }
    if (dataLines.length) handleEvent(dataLines.join("\n"));
  };

  try {
    while (!done) {
      const { value, done: ended } = await reader.read();
      if (ended) break;
      // Normalise CRLF and CR line ends; a CR at the end of a piece waits for the next.
      let text = pendingCR + decoder.decode(value, { stream: true });
      pendingCR = "";
      if (text.endsWith("\r")) {
        pendingCR = "\r";
        text = text.slice(0, -1);
      }
      buffer += text.replace(/\r\n?/g, "\n");
      let sep;
      while (!done && (sep = buffer.indexOf("\n\n")) !== -1) {
        const block = buffer.slice(0, sep);
        buffer = buffer.slice(sep + 2);
        handleBlock(block);
      }
    }
    if (!done && buffer.trim()) handleBlock(buffer.replace(/\r/g, ""));
  } finally {
    // Done, failed or aborted: let go of the connection.
    reader.cancel().catch(() => {});
  }
}
