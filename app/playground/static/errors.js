// What each of the contract's error codes (§3) means to the person at the keyboard.

const MESSAGES = {
  invalid_request: "The service could not accept this request.",
  payload_too_large: "The message is too long for this service.",
  unauthorized: "The service needs a valid API key. Enter it above.",
  not_found: "That was not found (the conversation may have been deleted).",
  model_not_found: "That model is not available. Pick another one.",
  rate_limited: "Too many requests for now.",
  upstream_unavailable: "The LLM server could not be reached. Is it running?",
  upstream_timeout: "The LLM server took too long to answer.",
  upstream_rejected: "The LLM server refused the request.",
  upstream_protocol_error: "The LLM server answered in a form the service does not understand.",
  stream_interrupted: "The answer broke off before it was finished.",
  conflict: "This conversation is still answering another message. Wait for it or stop it.",
  storage_unavailable: "The service's database is not answering.",
  limits_unavailable: "The service cannot check its rate limits right now.",
  busy: "Another answer is still running.",
  server_shutdown: "The service is restarting.",
  internal_error: "Something went wrong inside the service.",
  network_error: "The service could not be reached.",
};

// One readable paragraph: what happened in plain words, then the service's own detail.
export function describe(error) {
  const summary = MESSAGES[error.code] || "Something went wrong.";
  const wait = error.retryAfter ? ` Try again in ${error.retryAfter} s.` : "";
  const detail = error.message && error.message !== summary ? ` (${error.code}: ${error.message})` : "";
  return `${summary}${wait}${detail}`;
}
