// The playground's page: asks the service what exists, then chats with it.
// Model output and stored text are only ever inserted as text (text nodes, textContent).

import { ApiError, getJson, patchJson, remove, storedKey, storeKey, streamChat } from "./api.js";
import { describe } from "./errors.js";

const $ = (id) => document.getElementById(id);
const ui = {
  model: $("model"),
  keyPanel: $("key-panel"),
  keyReason: $("key-reason"),
  keyForm: $("key-form"),
  keyInput: $("api-key"),
  forgetKey: $("forget-key"),
  conversations: $("conversations"),
  conversationList: $("conversation-list"),
  conversationsNote: $("conversations-note"),
  newChat: $("new-chat"),
  notice: $("notice"),
  transcript: $("transcript"),
  problem: $("problem"),
  problemText: $("problem-text"),
  retry: $("retry"),
  composer: $("composer"),
  message: $("message"),
  send: $("send"),
  stop: $("stop"),
  status: $("status"),
  itemTemplate: $("conversation-item"),
};

const state = {
  key: storedKey(),
  history: false, // GET /conversations answered: the service stores conversations
  conversationId: null,
  turns: [], // what was said on this page, for a service that stores nothing
  running: null, // the AbortController of the answer streaming now
  failed: null, // { body, nodes } of the last request that failed retryably
};

function show(element, visible) {
  element.hidden = !visible;
}

function setNotice(text) {
  ui.notice.textContent = text;
  show(ui.notice, Boolean(text));
}

function needKey(reason) {
  ui.keyReason.textContent = reason;
  ui.keyInput.value = state.key;
  show(ui.keyPanel, true);
}

// --------------------------------------------------------------------- what the service offers

async function loadModels() {
  let listing;
  try {
    listing = await getJson("/models", state.key);
  } catch (error) {
    if (error instanceof ApiError && error.code === "unauthorized") {
      needKey(state.key ? "That API key was refused. Enter another one." : "This service needs an API key. It is kept in this browser's local storage.");
      return false;
    }
    setNotice(`The model list could not be loaded. ${describe(error)}`);
    return true;
  }
  if (state.key) needKey("Using the API key kept in this browser's local storage.");
  ui.model.replaceChildren();
  for (const entry of listing.data) {
    const option = new Option(entry.id, entry.id, entry.default, entry.default);
    ui.model.append(option);
  }
  const down = (listing.errors || []).map((e) => `${e.provider}: ${e.message}`);
  setNotice(down.length ? `Some providers did not answer: ${down.join("; ")}` : "");
  return true;
}

async function loadConversations() {
  let page;
  try {
    page = await getJson("/conversations?limit=50", state.key);
  } catch (error) {
    // 404: persistence is off; hide the list and send each chat's history along instead.
    state.history = false;
    show(ui.conversations, false);
    if (!(error instanceof ApiError) || error.code !== "not_found") setNotice(describe(error));
    return;
  }
  state.history = true;
  show(ui.conversations, true);
  ui.conversationList.replaceChildren(...page.data.map(conversationItem));
  ui.conversationsNote.textContent = page.data.length ? "" : "No conversations yet.";
  show(ui.conversationsNote, !page.data.length);
}

function conversationItem(conversation) {
  const item = ui.itemTemplate.content.firstElementChild.cloneNode(true);
  const open = item.querySelector(".open");
  const renameForm = item.querySelector(".rename-form");
  const confirm = item.querySelector(".confirm-delete");
  const actions = item.querySelector(".item-actions");
  open.textContent = conversation.title || "(untitled)";
  if (conversation.id === state.conversationId) open.setAttribute("aria-current", "true");
  open.addEventListener("click", () => openConversation(conversation.id));
  item.querySelector(".rename").setAttribute("aria-label", `Rename “${open.textContent}”`);
  item.querySelector(".delete").setAttribute("aria-label", `Delete “${open.textContent}”`);

  item.querySelector(".rename").addEventListener("click", () => {
    renameForm.elements.title.value = conversation.title;
    show(actions, false);
    show(renameForm, true);
    renameForm.elements.title.focus();
  });
  renameForm.querySelector(".cancel").addEventListener("click", () => {
    show(renameForm, false);
    show(actions, true);
  });
  renameForm.addEventListener("submit", async (event) => {
    event.preventDefault();
    await act(() => patchJson(`/conversations/${conversation.id}`, { title: renameForm.elements.title.value }, state.key));
    await loadConversations();
  });

  item.querySelector(".delete").addEventListener("click", () => {
    show(actions, false);
    show(confirm, true);
    confirm.querySelector(".keep").focus();
  });
  confirm.querySelector(".keep").addEventListener("click", () => {
    show(confirm, false);
    show(actions, true);
  });
  confirm.querySelector(".really-delete").addEventListener("click", async () => {
    const gone = await act(() => remove(`/conversations/${conversation.id}`, state.key));
    if (gone && conversation.id === state.conversationId) startNewChat();
    await loadConversations();
  });
  return item;
}

// Runs one conversation-list action; a failure is shown, not thrown. True when it worked.
async function act(action) {
  try {
    await action();
    showProblem(null);
    return true;
  } catch (error) {
    state.failed = null; // Retry repeats chats only
    showProblem(error);
    return false;
  }
}

async function openConversation(id) {
  if (state.running) return;
  let conversation;
  try {
    conversation = await getJson(`/conversations/${id}`, state.key);
  } catch (error) {
    showProblem(error);
    return;
  }
  showProblem(null);
  state.conversationId = conversation.id;
  state.turns = [];
  ui.transcript.replaceChildren();
  for (const message of conversation.messages) {
    const label = message.role === "tool" ? `Tool result (${message.tool_call_id})` : message.model || message.role;
    const turn = addTurn(message.role, label);
    turn.text.data = message.content || "";
    for (const call of message.tool_calls || []) turn.addToolCall(call.function.name, call.function.arguments);
    if (message.reasoning) {
      turn.reasoning.data = message.reasoning;
      show(turn.details, true);
    }
    if (message.status && message.status !== "complete") turn.mark(message.error ? `error: ${message.error.message}` : message.status);
  }
  markCurrent();
  ui.message.focus();
}

function markCurrent() {
  if (state.history) loadConversations(); // one small request, and the list marks the open one
}

function startNewChat() {
  if (state.running) return;
  state.conversationId = null;
  state.turns = [];
  ui.transcript.replaceChildren();
  showProblem(null);
  markCurrent();
  ui.message.focus();
}

// --------------------------------------------------------------------- the transcript

function addTurn(role, label) {
  const item = document.createElement("li");
  item.className = `turn ${role}`;
  const who = document.createElement("div");
  who.className = "who";
  who.textContent = role === "user" ? "You" : label;
  const details = document.createElement("details");
  details.className = "reasoning";
  details.hidden = true;
  const summary = document.createElement("summary");
  summary.textContent = "Reasoning";
  const reasoningBox = document.createElement("div");
  const reasoning = document.createTextNode("");
  reasoningBox.append(reasoning);
  details.append(summary, reasoningBox);
  const textBox = document.createElement("div");
  textBox.className = "text";
  const text = document.createTextNode("");
  textBox.append(text);
  const calls = document.createElement("ul");
  calls.className = "tool-calls";
  calls.hidden = true;
  const note = document.createElement("div");
  note.className = "turn-note";
  note.hidden = true;
  item.append(who, details, textBox, calls, note);
  ui.transcript.append(item);
  return {
    item,
    details,
    reasoning,
    text,
    // A call the model made, as text: the playground shows it but runs no tools.
    addToolCall(name, args) {
      const call = document.createElement("li");
      call.className = "tool-call";
      call.textContent = `Tool call: ${name}(${args})`;
      calls.append(call);
      calls.hidden = false;
    },
    mark(words) {
      note.textContent = words;
      note.hidden = false;
    },
  };
}

function showProblem(error) {
  state.failed = error && error.retryable ? state.failed : null;
  if (!error) {
    show(ui.problem, false);
    return;
  }
  ui.problemText.textContent = describe(error);
  show(ui.retry, Boolean(error.retryable && state.failed));
  show(ui.problem, true);
  if (error.code === "unauthorized") needKey(state.key ? "That API key was refused. Enter another one." : "This service needs an API key.");
}

// --------------------------------------------------------------------- chatting

function chatBody(message) {
  const body = { message };
  if (ui.model.value) body.model = ui.model.value;
  if (state.history) {
    if (state.conversationId) body.conversation_id = state.conversationId;
  } else if (state.turns.length) {
    body.messages = state.turns; // a service without storage hears the page's earlier turns
  }
  return body;
}

async function run(body) {
  const controller = new AbortController();
  state.running = controller;
  showProblem(null);
  setBusy(true, "Answering…");
  const userTurn = addTurn("user");
  userTurn.text.data = body.message;
  const answer = addTurn("assistant", body.model || "assistant");
  answer.item.setAttribute("aria-busy", "true");
  userTurn.item.scrollIntoView({ block: "nearest" });
  let outcome = "done";
  try {
    const done = await streamChat(body, {
      key: state.key,
      signal: controller.signal,
      on(event) {
        if (event.delta !== undefined) answer.text.appendData(event.delta);
        else if (event.reasoning !== undefined) {
          answer.reasoning.appendData(event.reasoning);
          answer.details.hidden = false;
        } else if (event.tool_call) {
          answer.addToolCall(event.tool_call.name, event.tool_call.arguments);
        } else if (event.meta) {
          answer.item.querySelector(".who").textContent = `${event.meta.provider}/${event.meta.model}`;
          if (event.meta.conversation_id) state.conversationId = event.meta.conversation_id;
        }
      },
    });
    if (done.finish_reason === "tool_calls") {
      answer.mark("The model asked for a tool; the playground runs none (see the README's tool round trip).");
    }
  } catch (error) {
    if (error.name === "AbortError") {
      outcome = "stopped";
      answer.mark("Stopped.");
    } else {
      outcome = "failed";
      answer.mark(answer.text.data ? "The answer broke off here." : "No answer.");
      state.failed = { body, nodes: [userTurn.item, answer.item] };
      showProblem(error);
    }
  } finally {
    answer.item.removeAttribute("aria-busy");
    state.running = null;
    setBusy(false, outcome === "done" ? "Done." : outcome === "stopped" ? "Stopped." : "");
  }
  if (!state.history && outcome !== "failed") {
    // What the page showed is what the next chat sends as history (a stopped answer as far as it got).
    const said = [{ role: "user", content: body.message }];
    if (answer.text.data) said.push({ role: "assistant", content: answer.text.data });
    state.turns = [...(body.messages || []), ...said];
  }
  if (state.history) await loadConversations();
}

function setBusy(busy, words) {
  ui.send.disabled = busy;
  ui.stop.disabled = !busy;
  ui.status.textContent = words;
  ui.transcript.setAttribute("aria-busy", String(busy));
}

ui.composer.addEventListener("submit", (event) => {
  event.preventDefault();
  const message = ui.message.value;
  if (!message.trim() || state.running) return;
  ui.message.value = "";
  run(chatBody(message));
});

ui.message.addEventListener("keydown", (event) => {
  if (event.key === "Enter" && !event.shiftKey && !event.isComposing) {
    event.preventDefault();
    ui.composer.requestSubmit();
  }
});

ui.stop.addEventListener("click", () => {
  state.running?.abort(); // the fetch closes, and the service closes the LLM's request
  ui.message.focus();
});

ui.retry.addEventListener("click", () => {
  const failed = state.failed;
  if (!failed || state.running) return;
  for (const node of failed.nodes) node.remove();
  run(failed.body);
});

ui.newChat.addEventListener("click", startNewChat);

ui.keyForm.addEventListener("submit", async (event) => {
  event.preventDefault();
  state.key = ui.keyInput.value.trim();
  storeKey(state.key);
  await start();
});

ui.forgetKey.addEventListener("click", async () => {
  state.key = "";
  storeKey("");
  ui.keyInput.value = "";
  await start();
});

async function start() {
  showProblem(null);
  if (await loadModels()) {
    await loadConversations();
    ui.message.focus();
  } else {
    show(ui.conversations, false);
    ui.keyInput.focus();
  }
}

start();
