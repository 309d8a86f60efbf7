import { useRef, useState } from "react";
import { streamChat } from "./streamChat.js";

// Where the service runs: `VITE_AGENT_URL=http://127.0.0.1:9000 npm run dev` to change it.
const AGENT_URL = import.meta.env.VITE_AGENT_URL ?? "http://127.0.0.1:8000";

export function Chat() {
  const [message, setMessage] = useState("");
  const [answer, setAnswer] = useState("");
  const [status, setStatus] = useState("idle"); // idle | streaming | done | stopped | error
  const [error, setError] = useState(null);
  const controller = useRef(null);

  async function send(event) {
    event.preventDefault();
    if (!message.trim() || status === "streaming") return;
    controller.current = new AbortController();
    setAnswer("");
    setError(null);
    setStatus("streaming");
    try {
      await streamChat({ message }, {
        baseUrl: AGENT_URL,
        onDelta: (text) => setAnswer((previous) => previous + text),
        signal: controller.current.signal,
      });
      setStatus("done");
    } catch (caught) {
      if (caught.name === "AbortError") {
        setStatus("stopped");
      } else if (caught instanceof TypeError) {
        // fetch() says only "Failed to fetch"; the usual causes are these two.
        const hint = `is the service running at ${AGENT_URL}, and is ${window.location.origin} in its cors_origins?`;
        setError({ message: `${caught.message}: ${hint}`, retryable: true });
        setStatus("error");
      } else {
        setError(caught);
        setStatus("error");
      }
    }
  }

  return (
    <main>
      <h1>Chat</h1>
      <form onSubmit={send}>
        <label htmlFor="message">Message</label>
        <textarea id="message" value={message} onChange={(event) => setMessage(event.target.value)} />
        <button type="submit" disabled={status === "streaming"}>Send</button>
        <button type="button" onClick={() => controller.current?.abort()} disabled={status !== "streaming"}>
          Stop
        </button>
      </form>
      {/* React inserts strings as text, never as HTML: model output cannot inject markup. */}
      <output data-testid="answer" data-status={status} style={{ display: "block", whiteSpace: "pre-wrap" }}>
        {answer}
      </output>
      {error && <p role="alert">{error.message}{error.retryable ? " (you can send again)" : ""}</p>}
    </main>
  );
}
