// Streams one answer; onDelta gets each piece of text as it arrives.
// Pass an AbortController's signal to stop: the service then stops the LLM too.
// A failure throws an Error with the contract's `code` and `retryable` (sending again may work).
export async function streamChat(body, options = {}) {
  const { baseUrl = "http://127.0.0.1:8000", apiKey, onDelta, onReasoning, signal } = options;
  const headers = { "Content-Type": "application/json" };
  if (apiKey) headers.Authorization = `Bearer ${apiKey}`;
  const init = { method: "POST", headers, body: JSON.stringify(body), signal };
  const response = await fetch(`${baseUrl}/chat`, init);
  if (!response.ok) {
    const problem = await response.json(); // application/problem+json
    throw chatError(problem.code, problem.detail, RETRYABLE.has(problem.code));
  }
  const reader = response.body.getReader();
  const decoder = new TextDecoder(); // { stream: true } below keeps split UTF-8 characters whole
  let buffer = "";
  for (;;) {
    const { value, done } = await reader.read();
    if (done) break;
    buffer += decoder.decode(value, { stream: true });
    const lines = buffer.split("\n");
    buffer = lines.pop(); // the last piece may be an unfinished line
    for (const line of lines) {
      if (!line) continue;
      const event = JSON.parse(line);
      if (event.delta !== undefined) onDelta?.(event.delta);
      else if (event.reasoning !== undefined) onReasoning?.(event.reasoning);
      else if (event.error) throw chatError(event.error.code, event.error.message, event.error.retryable);
      else if (event.done) return event; // { done, finish_reason, usage? }
    }
  }
  throw chatError("stream_interrupted", "the stream ended without a done line", true);
}

const RETRYABLE = new Set([
  "rate_limited", "upstream_unavailable", "upstream_timeout", "stream_interrupted", "conflict",
  "storage_unavailable", "limits_unavailable", "busy", "server_shutdown",
]);

function chatError(code, message, retryable) {
  return Object.assign(new Error(`${code}: ${message}`), { code, retryable: Boolean(retryable) });
}
