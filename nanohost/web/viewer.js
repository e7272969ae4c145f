"use strict";
// The conversation viewer: a group's turns as the agent lived them.
//
// Past turns come from the group's archive (GET /web/groups/{g}/turns, …/turns/{id}, …/search);
// the turn under way comes live over the chat's websocket (/web/groups/{g}/stream), as "item"
// events: phase "start", then "item" (the latest version of each step), then "end", after which
// the archived turn replaces the live one. /viewer?group=G&turn=T is a turn's permalink.
// Rendering a turn is turns.js's (shared with the chat's steps panel).

const $ = (id) => document.getElementById(id);
const state = {
  group: null,
  generation: 0,
  turn: null, // the turn shown
  oldest: null, // the oldest turn listed, for "Older turns…"
  searching: false,
  live: null, // {turn, items: Map, status, model, usage, duration_ms, started}
  socket: null,
  backoff: 500,
};

async function call(path) {
  const response = await fetch(path, { credentials: "same-origin", headers: { "X-Nanohost": "1" } });
  if (response.status === 401) {
    location.assign("/");
    throw new Error("logged out");
  }
  const body = await response.json().catch(() => ({}));
  if (!response.ok) throw new Error(body.error || `${response.status} ${response.statusText}`);
  return body;
}

const groupUrl = (suffix) => `/web/groups/${encodeURIComponent(state.group)}/${suffix}`;
const permalink = (turn) =>
  `/viewer?group=${encodeURIComponent(state.group)}&turn=${encodeURIComponent(turn)}`;

function showError(text) {
  $("error").textContent = text;
  $("error").hidden = !text;
}

const { el, duration, when } = Turns;

// --- groups ---------------------------------------------------------------------------------

async function loadGroups() {
  const { groups } = await call("/web/groups");
  const nav = $("groups");
  nav.replaceChildren();
  for (const name of groups) {
    const button = el("button", "", name);
    button.type = "button";
    button.dataset.group = name;
    button.addEventListener("click", () => selectGroup(name, null, true));
    nav.append(button);
  }
  if (!groups.length) {
    $("title").textContent = "No groups";
    showError("No group has a web binding yet: run `nanohost bind web GROUP GROUP` on the host.");
    return;
  }
  const params = new URLSearchParams(location.search);
  const wanted = params.get("group");
  await selectGroup(groups.includes(wanted) ? wanted : groups[0], params.get("turn"), false);
}

async function selectGroup(name, turn, push) {
  const generation = ++state.generation;
  if (state.socket) state.socket.close();
  Object.assign(state, { group: name, turn: null, oldest: null, live: null, backoff: 500, searching: false });
  for (const button of $("groups").children) button.classList.toggle("active", button.dataset.group === name);
  $("title").textContent = name;
  $("to-chat").href = `/#${encodeURIComponent(name)}`;
  $("download").href = groupUrl("archive.zip");
  $("download").setAttribute("download", `${name}-conversations.zip`);
  $("query").value = "";
  $("clear-search").hidden = true;
  showTurn(null);
  if (push) history.pushState(null, "", `/viewer?group=${encodeURIComponent(name)}`);
  connect(generation);
  await loadTurns(false);
  if (turn && generation === state.generation) await openTurn(turn, false);
}

// --- the turn list --------------------------------------------------------------------------

async function loadTurns(older) {
  const generation = state.generation;
  try {
    const suffix = older && state.oldest ? `turns?before=${encodeURIComponent(state.oldest)}` : "turns";
    const { turns, more, complete } = await call(groupUrl(suffix));
    if (generation !== state.generation) return;
    if (!older) $("turns").replaceChildren();
    state.searching = false;
    for (const turn of turns) addTurnEntry(turn);
    if (turns.length) state.oldest = turns[turns.length - 1].turn;
    $("more").hidden = !more;
    $("list-note").textContent =
      complete === false
        ? "The listing stopped at its read limit: older turns are in the download."
        : $("turns").children.length
          ? ""
          : "No turns archived yet.";
    if (state.live && state.live.status === "running") liveEntry();
  } catch (error) {
    showError(`Could not load the turns: ${error.message}`);
  }
}

function addTurnEntry(turn, before = null) {
  const item = el("li", "turn-entry");
  item.dataset.turn = turn.turn;
  const link = el("a");
  link.href = permalink(turn.turn);
  link.addEventListener("click", (event) => {
    event.preventDefault();
    openTurn(turn.turn, true);
  });
  const top = el("span", "entry-top");
  top.append(el("span", "when", when(turn.started_at)), el("span", `status ${turn.status}`, turn.status));
  const facts = [
    `${turn.steps} step${turn.steps === 1 ? "" : "s"}`,
    duration(turn.duration_ms),
    turn.tokens ? `${turn.tokens} tokens` : "",
  ].filter(Boolean);
  link.append(top, el("span", "prompt", turn.prompt || "(no prompt)"), el("span", "facts", facts.join(" · ")));
  item.append(link);
  item.classList.toggle("active", turn.turn === state.turn);
  $("turns").insertBefore(item, before);
  return item;
}

function liveEntry() {
  const live = state.live;
  let item = [...$("turns").children].find((li) => li.dataset.turn === live.turn);
  if (!item) {
    item = addTurnEntry(
      { turn: live.turn, started_at: live.started, status: "running", steps: 0, prompt: live.prompts[0] || "the turn under way…" },
      $("turns").firstChild,
    );
    item.classList.add("live");
    $("list-note").textContent = "";
  }
  item.querySelector(".facts").textContent = `${live.items.size} step${live.items.size === 1 ? "" : "s"} so far`;
}

async function search(event) {
  event.preventDefault();
  const query = $("query").value.trim();
  if (!query) return loadTurns(false);
  const generation = state.generation;
  try {
    const { turns, complete } = await call(groupUrl(`search?q=${encodeURIComponent(query)}`));
    if (generation !== state.generation) return;
    state.searching = true;
    $("turns").replaceChildren();
    for (const turn of turns) addTurnEntry(turn);
    $("more").hidden = true;
    $("clear-search").hidden = false;
    $("list-note").textContent =
      `${turns.length} turn${turns.length === 1 ? "" : "s"} found for “${query}”${complete ? "" : " (the newest; there may be more)"}`;
  } catch (error) {
    showError(`Search failed: ${error.message}`);
  }
}

// --- one turn -------------------------------------------------------------------------------

async function openTurn(turnId, push) {
  const generation = state.generation;
  state.turn = turnId;
  for (const li of $("turns").children) li.classList.toggle("active", li.dataset.turn === turnId);
  if (push) history.pushState(null, "", permalink(turnId));
  if (state.live && state.live.turn === turnId && state.live.status === "running") return renderLive();
  try {
    const turn = await call(groupUrl(`turns/${encodeURIComponent(turnId)}`));
    if (generation !== state.generation || state.turn !== turnId) return;
    showError("");
    showTurn(turn);
  } catch (error) {
    if (generation === state.generation) showError(`Could not open the turn: ${error.message}`);
  }
}

function renderLive() {
  const live = state.live;
  showTurn({
    turn: live.turn,
    started_at: live.started,
    status: live.status,
    model: live.model,
    usage: live.usage,
    duration_ms: live.duration_ms,
    prompts: live.prompts,
    reply: "",
    items: [...live.items.values()],
    missed: !!live.missed,
    live: true,
  });
}

function showTurn(turn) {
  const article = $("turn-detail");
  $("turn-empty").hidden = !!turn;
  article.hidden = !turn;
  article.replaceChildren();
  document.body.classList.toggle("showing-turn", !!turn);
  if (!turn) return;
  Turns.render(article, turn, {
    permalink: permalink(turn.turn),
    back: () => {
      state.turn = null;
      showTurn(null);
      history.pushState(null, "", `/viewer?group=${encodeURIComponent(state.group)}`);
    },
  });
}

// --- live -----------------------------------------------------------------------------------

function connect(generation) {
  const scheme = location.protocol === "https:" ? "wss:" : "ws:";
  const socket = new WebSocket(`${scheme}//${location.host}${groupUrl("stream")}`);
  state.socket = socket;
  socket.addEventListener("open", () => {
    state.backoff = 500;
    $("connection").textContent = "live";
  });
  socket.addEventListener("message", (event) => {
    if (generation !== state.generation) return;
    const data = JSON.parse(event.data);
    if (data.type === "item") onItem(data);
    else if (data.type === "missed") onMissed();
  });
  socket.addEventListener("close", () => {
    if (generation !== state.generation) return;
    $("connection").textContent = "reconnecting…";
    const delay = state.backoff;
    state.backoff = Math.min(state.backoff * 2, 10000);
    setTimeout(() => generation === state.generation && connect(generation), delay);
  });
}

const MAX_LIVE_ITEMS = 200; // the live map keeps the newest steps; the archive has them all
let renderQueued = false;

// Rendering a turn is a full re-render: at most once a frame, however fast steps arrive.
function scheduleRender() {
  if (renderQueued) return;
  renderQueued = true;
  requestAnimationFrame(() => {
    renderQueued = false;
    const live = state.live;
    if (!live) return;
    if (!state.searching) liveEntry();
    if (state.turn === live.turn && live.status === "running") renderLive();
  });
}

function keepItem(live, item) {
  live.items.set(item.id, item);
  while (live.items.size > MAX_LIVE_ITEMS) {
    live.items.delete(live.items.keys().next().value);
    live.missed = true;
  }
}

// The host dropped live steps for this socket (it fell behind): the turn shown live is missing
// some; the archived turn, read when the turn ends, has them all.
function onMissed() {
  if (state.live) {
    state.live.missed = true;
    scheduleRender();
  }
}

function onItem(event) {
  if (event.phase === "start") {
    state.live = {
      turn: event.turn,
      items: new Map(),
      status: "running",
      started: new Date().toISOString(),
      prompts: event.prompts || [],
    };
    if (!state.searching) liveEntry();
    if (!state.turn) openTurn(event.turn, false);
    return;
  }
  const live = state.live;
  if (!live || live.turn !== event.turn) return;
  if (event.phase === "item" && event.item) {
    keepItem(live, event.item);
    scheduleRender();
  } else if (event.phase === "end") {
    Object.assign(live, { status: event.status, model: event.model, usage: event.usage, duration_ms: event.duration_ms });
    if (!state.searching) loadTurns(false).then(() => state.turn === live.turn && openTurn(live.turn, false));
  }
}

window.addEventListener("popstate", () => {
  const params = new URLSearchParams(location.search);
  const group = params.get("group");
  const turn = params.get("turn");
  if (group && group !== state.group) selectGroup(group, turn, false);
  else if (turn) openTurn(turn, false);
  else {
    state.turn = null;
    showTurn(null);
  }
});
$("search").addEventListener("submit", search);
$("clear-search").addEventListener("click", () => {
  $("query").value = "";
  $("clear-search").hidden = true;
  loadTurns(false);
});
$("more").addEventListener("click", () => loadTurns(true));
loadGroups().catch((error) => showError(`Could not load the groups: ${error.message}`));
