// The service's HTTP API as the playground uses it: same origin, the key (if any) as a Bearer token.

const KEY_STORAGE = "agent-backend.api-key";

export class ApiError extends Error {
  constructor(code, message, { status = 0, retryable = false, retryAfter = null } = {}) {
    super(message);
    this.name = "ApiError";
    this.code = code;
    this.status = status;
    this.retryable = retryable;
    this.retryAfter = retryAfter;
  }
}

// The contract's retryable codes (§3): a problem+json body does not say it, an error line does.
const RETRYABLE = new Set([
  "rate_limited", "upstream_unavailable", "upstream_timeout", "stream_interrupted", "conflict",
  "storage_unavailable", "limits_unavailable", "busy", "server_shutdown",
]);

export function storedKey() {
  try {
    return localStorage.getItem(KEY_STORAGE) || "";
  } catch {
    return ""; // storage switched off: the key lives only as long as the page
  }
}

export function storeKey(key) {
  try {
    if (key) localStorage.setItem(KEY_STORAGE, key);
    else localStorage.removeItem(KEY_STORAGE);
  } catch {
    // storage switched off; nothing to keep
  }
}

function headers(key, json) {
  // X-Requested-With: the service then never offers a Basic challenge, so the browser never
  // shows its own login dialog for these calls (the key field is the way in).
  const result = { Accept: "application/json", "X-Requested-With": "fetch" };
  if (json) result["Content-Type"] = "application/json";
  if (key) result.Authorization = `Bearer ${key}`;
  return result;
}

async function problemOf(response) {
  let body = null;
  try {
    body = await response.json();
  } catch {
    // not problem+json (a proxy's page): the status alone must do
  }
  const code = body?.code || (response.status === 404 ? "not_found" : "internal_error");
  const retryAfter = Number.parseInt(response.headers.get("Retry-After") || "", 10);
  return new ApiError(code, body?.detail || response.statusText || `HTTP ${response.status}`, {
    status: response.status,
    retryable: RETRYABLE.has(code),
    retryAfter: Number.isFinite(retryAfter) ? retryAfter : null,
  });
}

async function send(method, path, { key, body, signal } = {}) {
  let response;
  try {
    response = await fetch(path, {
      method,
      headers: headers(key, body !== undefined),
      body: body === undefined ? undefined : JSON.stringify(body),
      signal,
      credentials: "omit",
    });
  } catch (error) {
    if (error.name === "AbortError") throw error;
    throw new ApiError("network_error", "the service did not answer", { retryable: true });
  }
  if (!response.ok) throw await problemOf(response);
  return response;
}

export async function getJson(path, key) {
  const response = await send("GET", path, { key });
  return response.json();
}

export async function patchJson(path, body, key) {
  const response = await send("PATCH", path, { key, body });
  return response.json();
}

export async function remove(path, key) {
  await send("DELETE", path, { key });
}

// POST /chat and read its NDJSON lines as they arrive; `on` gets each event (meta, delta,
// reasoning, tool events). Resolves with the done line; throws ApiError for an error line.
export async function streamChat(body, { key, signal, on }) {
  const response = await send("POST", "/chat", { key, body, signal });
  const reader = response.body.getReader();
  const decoder = new TextDecoder();
  let buffer = "";
  for (;;) {
    const { value, done } = await reader.read();
    if (done) break;
    buffer += decoder.decode(value, { stream: true });
    let start = 0;
    for (let end = buffer.indexOf("\n"); end >= 0; end = buffer.indexOf("\n", start)) {
      const line = buffer.slice(start, end);
      start = end + 1;
      if (!line) continue;
      const event = JSON.parse(line);
      if (event.error) {
        throw new ApiError(event.error.code, event.error.message, { retryable: Boolean(event.error.retryable) });
      }
      if (event.done) return event;
      on(event);
    }
    buffer = buffer.slice(start);
  }
  throw new ApiError("stream_interrupted", "the answer ended before it was finished", { retryable: true });
}
