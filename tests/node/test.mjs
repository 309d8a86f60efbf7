// The AI SDK's own client against the service: `ai`'s DefaultChatTransport and AbstractChat, no browser.
// Usage: node test.mjs <service url> <case>...  Prints one JSON line per case; the pytest side asserts them.
import { AbstractChat, DefaultChatTransport } from 'ai';

class MemoryState {
  constructor(messages = []) {
    this.status = 'ready';
    this.error = undefined;
    this.messages = messages;
  }
  pushMessage(message) { this.messages = this.messages.concat(message); }
  popMessage() { this.messages = this.messages.slice(0, -1); }
  replaceMessage(index, message) {
    this.messages = [...this.messages.slice(0, index), message, ...this.messages.slice(index + 1)];
  }
  snapshot(thing) { return structuredClone(thing); }
}

class NodeChat extends AbstractChat {
  constructor({ messages, ...init }) {
    super({ ...init, state: new MemoryState(messages) });
  }
}

const [url, ...cases] = process.argv.slice(2);
const TIMEOUT_MS = 15000;

function chatFor(name, extra = {}) {
  const data = [];
  const chat = new NodeChat({
    id: `node-${name}-${Date.now().toString(36)}`,
    transport: new DefaultChatTransport({ api: `${url}/api/chat`, body: { model: `case-${name}` }, ...extra }),
    onData: (part) => data.push(part),
  });
  return { chat, data };
}

function summary(name, chat, data, more = {}) {
  return {
    case: name,
    status: chat.status,
    error: chat.error ? chat.error.message : null,
    data,
    messages: chat.messages.map((m) => ({ id: m.id, role: m.role, metadata: m.metadata ?? null, parts: m.parts })),
    ...more,
  };
}

function bounded(promise, what) {
  let timer;
  const timeout = new Promise((_, reject) => {
    timer = setTimeout(() => reject(new Error(`${what} took longer than ${TIMEOUT_MS} ms`)), TIMEOUT_MS);
  });
  return Promise.race([promise, timeout]).finally(() => clearTimeout(timer));
}

async function waitFor(check, what) {
  const deadline = Date.now() + TIMEOUT_MS;
  while (!check()) {
    if (Date.now() > deadline) throw new Error(`never: ${what}`);
    await new Promise((resolve) => setTimeout(resolve, 10));
  }
}

const run = {
  // text, reasoning, tool, error: one message, awaited to its end.
  async plain(name) {
    const { chat, data } = chatFor(name);
    await bounded(chat.sendMessage({ text: `hello from ${name}` }), `the ${name} answer`);
    return summary(name, chat, data);
  },
  // stop: the SDK's Stop aborts the fetch mid-answer (the service closes the upstream).
  async stop(name) {
    const { chat, data } = chatFor(name);
    const sent = chat.sendMessage({ text: 'a long one please' });
    const textSoFar = () => {
      const last = chat.messages[chat.messages.length - 1];
      return last && last.role === 'assistant' ? last.parts.filter((p) => p.type === 'text').map((p) => p.text).join('') : '';
    };
    await waitFor(() => textSoFar().length > 0, 'a delta before stop');
    await chat.stop();
    await bounded(sent, 'the stopped answer');
    return summary(name, chat, data, { textAtStop: textSoFar() });
  },
  // reload: the page goes away mid-answer (with resume on that only detaches); a new Chat with the
  // stored messages re-attaches through the transport's reconnect URL and gets the whole answer.
  async reload(name) {
    const chatId = `node-reload-${Date.now().toString(36)}`;
    const transport = () => new DefaultChatTransport({ api: `${url}/api/chat`, body: { model: 'case-reload' } });
    const before = new NodeChat({ id: chatId, transport: transport() });
    const sent = before.sendMessage({ text: 'tell me everything' });
    const lastText = (chat) => {
      const last = chat.messages[chat.messages.length - 1];
      return last && last.role === 'assistant' ? last.parts.filter((p) => p.type === 'text').map((p) => p.text).join('') : '';
    };
    await waitFor(() => lastText(before).length > 0, 'a delta before the reload');
    const textBeforeReload = lastText(before);
    await before.stop();
    await bounded(sent, 'the first page\'s request');
    const stored = await (await fetch(`${url}/api/chat/${chatId}/messages`)).json();
    const after = new NodeChat({ id: chatId, transport: transport(), messages: stored });
    await bounded(after.resumeStream(), 'the resumed answer');
    // A chat that never streamed: the reconnect answers 204 and nothing happens.
    const fresh = new NodeChat({ id: `${chatId}-new`, transport: transport() });
    await bounded(fresh.resumeStream(), 'a resume of a new chat');
    return {
      ...summary(name, after, []),
      textBeforeReload,
      storedRoles: stored.map((m) => m.role),
      fresh: { status: fresh.status, error: fresh.error ? fresh.error.message : null, messages: fresh.messages.length },
    };
  },
};

for (const name of cases) {
  const runner = name === 'stop' ? run.stop : name === 'reload' ? run.reload : run.plain;
  try {
    console.log(JSON.stringify(await runner(name)));
  } catch (error) {
    console.log(JSON.stringify({ case: name, failure: String(error && error.stack ? error.stack : error) }));
  }
}
