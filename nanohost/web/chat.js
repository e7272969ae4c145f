"use strict";
// The web chat page: groups on the left, one conversation on the right.
//
// History comes from GET /web/groups/{g}/messages (page by page); live messages and progress from
// the websocket /web/groups/{g}/stream?after=<last id>. When the socket drops (host restart,
// network), it reconnects with backoff, resuming after the last id seen; messages are keyed by
// id, so a replay never shows one twice. A 401 anywhere means the session ended: reload to log in.
// An error shown while the host was away clears itself once the socket is back.

const PAGE = 200;
const STEPS_WIDE = 1100; // px: from this width on, the steps panel starts open beside the chat
const $ = (id) => document.getElementById(id);
const state = {
  group: null,
  generation: 0, // bumped when the group changes: late events of the old one are dropped
  messages: new Map(),
  lastId: 0,
  progress: "",
  socket: null,
  backoff: 500,
  reconnecting: false,
  maxBytes: 0,
  live: null, // the turn under way, for the steps panel: {turn, items: Map, status, started, …}
};

async function call(path, options = {}) {
  const response = await fetch(path, {
    credentials: "same-origin",
    ...options,
    headers: { "X-Nanohost": "1", ...(options.headers || {}) },
  });
  if (response.status === 401) {
    location.reload();
    throw new Error("logged out");
  }
  const body = await response.json().catch(() => ({}));
  if (!response.ok) throw new Error(body.error || `${response.status} ${response.statusText}`);
  return body;
}

function groupUrl(suffix) {
  return `/web/groups/${encodeURIComponent(state.group)}/${suffix}`;
}

function showError(text) {
  $("error").textContent = text;
  $("error").hidden = !text;
}

// --- groups ---------------------------------------------------------------------------------

async function loadGroups() {
  const { groups, max_attachment_bytes: maxBytes } = await call("/web/groups");
  state.maxBytes = maxBytes;
  const nav = $("groups");
  nav.replaceChildren();
  for (const name of groups) {
    const button = document.createElement("button");
    button.type = "button";
    button.textContent = name;
    button.dataset.group = name;
    button.addEventListener("click", () => selectGroup(name));
    nav.append(button);
  }
  if (!groups.length) {
    $("title").textContent = "No groups";
    showError("No group has a web binding yet: run `nanohost bind web GROUP GROUP` on the host.");
    $("send").disabled = $("new-conversation").disabled = true;
    return;
  }
  const wanted = decodeURIComponent(location.hash.slice(1));
  selectGroup(groups.includes(wanted) ? wanted : groups[0]);
}

async function selectGroup(name) {
  const generation = ++state.generation;
  if (state.socket) state.socket.close();
  Object.assign(state, { group: name, messages: new Map(), lastId: 0, progress: "", backoff: 500, live: null });
  history.replaceState(null, "", `#${encodeURIComponent(name)}`);
  $("title").textContent = name;
  $("to-viewer").href = `/viewer?group=${encodeURIComponent(name)}`;
  showSteps(null);
  loadSteps(generation);
  $("messages").replaceChildren();
  showError("");
  for (const button of $("groups").children) button.classList.toggle("active", button.dataset.group === name);
  updateThinking();
  try {
    for (;;) {
      const { messages } = await call(groupUrl(`messages?after=${state.lastId}`));
      if (generation !== state.generation) return;
      messages.forEach(addMessage);
      if (messages.length < PAGE) break;
    }
  } catch (exc) {
    showError(`could not load the conversation: ${exc.message}`);
  }
  connect(generation);
}

// --- live stream ----------------------------------------------------------------------------

function connect(generation) {
  if (generation !== state.generation) return;
  const scheme = location.protocol === "https:" ? "wss:" : "ws:";
  const socket = new WebSocket(`${scheme}//${location.host}${groupUrl(`stream?after=${state.lastId}`)}`);
  state.socket = socket;
  socket.addEventListener("open", () => {
    state.backoff = 500;
    $("connection").textContent = "";
    if (state.reconnecting) showError(""); // whatever failed while the host was away is past
    state.reconnecting = false;
  });
  socket.addEventListener("message", (event) => {
    if (generation !== state.generation) return;
    const data = JSON.parse(event.data);
    if (data.type === "message") addMessage(data);
    else if (data.type === "item") onItem(data, generation);
    else if (data.type === "missed" && state.live) {
      state.live.missed = true; // the host dropped live steps: the archive has them at the end
      scheduleSteps();
    }
    else if (data.type === "progress") {
      state.progress = data.text || "";
      $("thinking").dataset.progress = "1";
      updateThinking();
    }
  });
  socket.addEventListener("close", () => {
    if (generation !== state.generation) return;
    state.reconnecting = true;
    $("connection").textContent = "reconnecting…";
    const delay = state.backoff;
    state.backoff = Math.min(state.backoff * 2, 10000);
    setTimeout(() => reconnect(generation), delay);
  });
}

// --- the steps panel: the latest turn as the agent lived it (turns.js renders it) -----------

function showSteps(turn) {
  $("steps-empty").hidden = !!turn;
  $("steps-turn").hidden = !turn;
  if (!turn) return $("steps-turn").replaceChildren();
  Turns.render($("steps-turn"), turn, {
    compact: true,
    title: turn.live ? "This turn" : "Latest turn",
    linkText: "open in the viewer",
    permalink: `/viewer?group=${encodeURIComponent(state.group)}&turn=${encodeURIComponent(turn.turn)}`,
  });
}

async function loadSteps(generation) {
  try {
    const { turns } = await call(groupUrl("turns"));
    if (generation !== state.generation || !turns.length) return;
    const turn = await call(groupUrl(`turns/${encodeURIComponent(turns[0].turn)}`));
    if (generation !== state.generation || (state.live && state.live.status === "running")) return;
    showSteps(turn);
  } catch (exc) {
    if (generation === state.generation) $("steps-empty").textContent = `Could not load the steps: ${exc.message}`;
  }
}

const MAX_LIVE_ITEMS = 200; // the live map keeps the newest steps; the archive has them all
let stepsQueued = false;

// The steps panel is re-rendered whole: at most once a frame, however fast steps arrive.
function scheduleSteps() {
  if (stepsQueued) return;
  stepsQueued = true;
  requestAnimationFrame(() => {
    stepsQueued = false;
    const live = state.live;
    if (!live || live.status !== "running") return;
    showSteps({
      turn: live.turn,
      started_at: live.started,
      status: live.status,
      items: [...live.items.values()],
      missed: !!live.missed,
      live: true,
    });
  });
}

function onItem(event, generation) {
  if (event.phase === "start") {
    state.live = { turn: event.turn, items: new Map(), status: "running", started: new Date().toISOString() };
  }
  const live = state.live;
  if (!live || live.turn !== event.turn) return;
  if (event.phase === "item" && event.item) {
    live.items.set(event.item.id, event.item);
    while (live.items.size > MAX_LIVE_ITEMS) {
      live.items.delete(live.items.keys().next().value);
      live.missed = true;
    }
  }
  if (event.phase === "end") {
    live.status = event.status;
    return loadSteps(generation);
  }
  scheduleSteps();
}

function toggleSteps(open) {
  document.body.classList.toggle("with-steps", open);
  $("toggle-steps").setAttribute("aria-expanded", String(open));
}

async function reconnect(generation) {
  try {
    await call("/web/groups"); // the host is back and the session still valid (401 reloads)
  } catch {
    if (generation === state.generation) setTimeout(() => reconnect(generation), state.backoff);
    state.backoff = Math.min(state.backoff * 2, 10000);
    return;
  }
  connect(generation);
}

// --- messages -------------------------------------------------------------------------------

function addMessage(message) {
  if (state.messages.has(message.id)) return;
  state.messages.set(message.id, message);
  const item = document.createElement("li");
  item.className = `message ${message.direction}`;
  item.dataset.id = message.id;
  const meta = document.createElement("div");
  meta.className = "meta";
  const when = new Date(message.created_at);
  // Replies carry the group's name (the agent answers as its group); messages in, their sender.
  const sender =
    message.direction === "out" ? state.group : message.sender === "web" ? "you" : message.sender || "someone";
  meta.textContent = `${sender} · ${
    isNaN(when) ? "" : when.toLocaleTimeString([], { hour: "2-digit", minute: "2-digit" })}`;
  const body = document.createElement("div");
  body.className = "body";
  body.innerHTML = renderMarkdown(message.text); // escapes everything first (markdown.js)
  body.querySelectorAll("pre").forEach(addCopyButton);
  item.append(meta, body);
  if (message.files.length) {
    const files = document.createElement("ul");
    files.className = "files";
    for (const file of message.files) {
      const link = document.createElement("a");
      link.href = file.url;
      link.download = file.name;
      link.textContent = file.name;
      const entry = document.createElement("li");
      entry.append(link);
      files.append(entry);
    }
    item.append(files);
  }
  const list = $("messages");
  const later = [...list.children].find((li) => Number(li.dataset.id) > message.id);
  list.insertBefore(item, later || null);
  state.lastId = Math.max(state.lastId, message.id);
  if (message.direction === "out") state.progress = "";
  updateThinking();
  list.scrollTop = list.scrollHeight;
}

// A "Copy" button on a code block: copies the code's text (not the button's).
function addCopyButton(pre) {
  const code = pre.querySelector("code");
  if (!code) return;
  const button = document.createElement("button");
  button.type = "button";
  button.className = "copy";
  button.textContent = "Copy";
  button.title = "Copy the code";
  button.addEventListener("click", async () => {
    try {
      await copyText(code.textContent);
      button.textContent = "Copied";
    } catch {
      button.textContent = "Copy failed";
    }
    setTimeout(() => (button.textContent = "Copy"), 1500);
  });
  pre.classList.add("copyable");
  pre.prepend(button);
}

// The clipboard API where the page is a secure context (https, localhost); else a selection copy.
async function copyText(text) {
  if (navigator.clipboard && window.isSecureContext) return navigator.clipboard.writeText(text);
  const area = document.createElement("textarea");
  area.value = text;
  area.readOnly = true;
  area.className = "offscreen";
  document.body.append(area);
  area.select();
  const copied = document.execCommand("copy");
  area.remove();
  if (!copied) throw new Error("copy refused");
}

// "thinking…" while the newest message is the user's and still waiting, or while progress arrives.
function updateThinking() {
  const newest = state.messages.get(state.lastId);
  const waiting = newest && newest.direction === "in" && ["pending", "queued"].includes(newest.status);
  const thinking = $("thinking");
  thinking.hidden = !(waiting || state.progress);
  if (thinking.hidden) delete thinking.dataset.progress;
  $("progress").textContent = state.progress && state.progress !== "thinking…" ? state.progress : "";
}

// --- sending --------------------------------------------------------------------------------

async function send(event) {
  event.preventDefault();
  const text = $("text").value;
  const file = $("file").files[0];
  if (!text.trim() && !file) return;
  if (file && state.maxBytes && file.size > state.maxBytes) {
    showError(`${file.name} is larger than the ${(state.maxBytes / 1024 ** 2).toFixed(0)} MiB limit`);
    return;
  }
  if (await post(text, file)) {
    $("text").value = "";
    clearAttachment();
  }
  $("text").focus();
}

// Post one message (and file); true when the host recorded it.
async function post(text, file) {
  const form = new FormData();
  form.append("text", text);
  if (file) form.append("file", file);
  $("send").disabled = $("new-conversation").disabled = true;
  showError("");
  try {
    const { id } = await call(groupUrl("messages"), { method: "POST", body: form });
    // The socket delivers the row itself; until then, show the wait at once.
    if (!state.messages.has(id)) {
      const { messages } = await call(groupUrl(`messages?after=${state.lastId}`));
      messages.forEach(addMessage);
    }
    return true;
  } catch (exc) {
    // fetch rejects with a TypeError when the host cannot be reached at all
    showError(
      exc instanceof TypeError ? "The host cannot be reached: not sent. Send it again once it is back." : exc.message,
    );
    return false;
  } finally {
    $("send").disabled = $("new-conversation").disabled = false;
  }
}

function showAttachment() {
  const file = $("file").files[0];
  $("file-name").textContent = file ? file.name : "";
  $("attachment").hidden = !file;
}

function clearAttachment() {
  $("file").value = "";
  showAttachment();
}

$("composer").addEventListener("submit", send);
$("toggle-steps").addEventListener("click", () => toggleSteps(!document.body.classList.contains("with-steps")));
$("close-steps").addEventListener("click", () => toggleSteps(false));
toggleSteps(window.innerWidth >= STEPS_WIDE);
$("text").addEventListener("keydown", (event) => {
  if (event.key === "Enter" && !event.shiftKey && !event.isComposing) {
    event.preventDefault();
    $("composer").requestSubmit();
  }
});
$("file").addEventListener("change", showAttachment);
$("file-clear").addEventListener("click", () => {
  clearAttachment();
  $("text").focus();
});
// The host starts a fresh conversation (a new thread; memory and files stay) on "/new".
$("new-conversation").addEventListener("click", () => post("/new", null));
$("logout").addEventListener("click", async () => {
  await fetch("/web/logout", { method: "POST", headers: { "X-Nanohost": "1" } });
  location.replace("/");
});

loadGroups().catch((exc) => showError(`could not load the groups: ${exc.message}`));
