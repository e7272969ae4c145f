"use strict";
// The conversation viewer: a group's turns as the agent lived them.
//
// Past turns come from the group's archive (GET /web/groups/{g}/turns, …/turns/{id}, …/search);
// the turn under way comes live over the chat's websocket (/web/groups/{g}/stream), as "item"
// events: phase "start", then "item" (the latest version of each step), then "end", after which
// the archived turn replaces the live one. /viewer?group=G&turn=T is a turn's permalink.
// Everything the agent wrote is shown as text (textContent), or through markdown.js, which
// escapes everything first.

const $ = (id) => document.getElementById(id);
const SMALL_DIFF = 3000; // characters: a diff this small is shown open, a larger one collapsed
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

function el(tag, className, text) {
  const node = document.createElement(tag);
  if (className) node.className = className;
  if (text !== undefined && text !== null) node.textContent = text;
  return node;
}

function duration(ms) {
  if (ms === undefined || ms === null) return "";
  return ms < 1000 ? `${ms} ms` : `${(ms / 1000).toFixed(1)} s`;
}

function when(iso) {
  const moment = new Date(iso);
  return isNaN(moment) ? iso || "" : moment.toLocaleString([], { dateStyle: "short", timeStyle: "medium" });
}

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
    const { turns, more } = await call(groupUrl(suffix));
    if (generation !== state.generation) return;
    if (!older) $("turns").replaceChildren();
    state.searching = false;
    for (const turn of turns) addTurnEntry(turn);
    if (turns.length) state.oldest = turns[turns.length - 1].turn;
    $("more").hidden = !more;
    $("list-note").textContent = $("turns").children.length ? "" : "No turns archived yet.";
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
  article.dataset.turn = turn.turn;
  const back = el("button", "quiet back", "← Turns");
  back.type = "button";
  back.addEventListener("click", () => {
    state.turn = null;
    showTurn(null);
    history.pushState(null, "", `/viewer?group=${encodeURIComponent(state.group)}`);
  });
  const title = el("h3", "", `Turn · ${when(turn.started_at)}`);
  title.append(" ", el("span", `status ${turn.status}`, turn.live ? `${turn.status} (live)` : turn.status));
  const meta = el("p", "turn-meta");
  const facts = [];
  if (turn.model) facts.push(`model ${turn.model}`);
  const usage = turn.usage || {};
  if (usage.total !== undefined) {
    const parts = [`${usage.total} tokens`];
    if (usage.input !== undefined) parts.push(`${usage.input} in${usage.cached_input ? ` (${usage.cached_input} cached)` : ""}`);
    if (usage.output !== undefined) parts.push(`${usage.output} out`);
    if (usage.reasoning) parts.push(`${usage.reasoning} reasoning`);
    facts.push(parts.join(", "));
  }
  if (turn.duration_ms !== undefined) facts.push(`took ${duration(turn.duration_ms)}`);
  if (facts.length) meta.append(`${facts.join(" · ")} · `);
  const link = el("a", "permalink", "link to this turn");
  link.href = permalink(turn.turn);
  meta.append(link);
  article.append(back, title, meta);
  for (const prompt of turn.prompts || []) {
    const block = el("section", "step user");
    block.append(el("h4", "", "User"), el("div", "text", prompt));
    article.append(block);
  }
  const steps = el("ol", "steps");
  for (const item of turn.items || []) {
    if (item.type === "message" && !turn.live && item.text === turn.reply) continue; // shown as the reply
    steps.append(renderItem(item));
  }
  if (turn.items_left_out) steps.append(el("li", "step hint", `${turn.items_left_out} more steps were not archived`));
  article.append(steps);
  if (turn.error) article.append(el("p", "error", turn.error));
  if (turn.reply) {
    const reply = el("section", "step reply");
    const body = el("div", "body");
    body.innerHTML = renderMarkdown(turn.reply); // escapes everything first (markdown.js)
    reply.append(el("h4", "", "Reply"), body);
    article.append(reply);
  }
}

function collapsible(summary, content, open = false) {
  const details = el("details");
  details.open = open;
  details.append(el("summary", "", summary), content);
  return details;
}

function diffBlock(diff) {
  const pre = el("pre", "diff");
  for (const line of diff.replace(/\n$/, "").split("\n")) {
    const kind = line.startsWith("+") && !line.startsWith("+++") ? "add"
      : line.startsWith("-") && !line.startsWith("---") ? "del"
      : line.startsWith("@@") ? "hunk" : "";
    pre.append(el("span", kind, `${line}\n`));
  }
  return pre;
}

function renderItem(item) {
  const li = el("li", `step ${item.type}`);
  li.dataset.item = item.id;
  li.dataset.status = item.status || "";
  if (item.type === "reasoning") {
    li.append(el("h4", "", "Reasoning"), el("div", "text", item.text || "(no summary)"));
  } else if (item.type === "command") {
    const facts = [item.exit_code !== undefined ? `exit ${item.exit_code}` : item.status, duration(item.duration_ms)];
    const summary = `$ ${item.command || ""}  ·  ${facts.filter(Boolean).join(" · ")}`;
    li.append(collapsible(summary, el("pre", "output", item.output || "(no output)")));
  } else if (item.type === "file_change") {
    li.append(el("h4", "", "Files changed"));
    for (const change of item.changes || []) {
      const name = `${change.path}${change.kind ? ` (${change.kind})` : ""}`;
      if (!change.diff) li.append(el("div", "path", name));
      else li.append(collapsible(name, diffBlock(change.diff), change.diff.length <= SMALL_DIFF));
    }
  } else if (item.type === "tool_call") {
    const content = el("div");
    content.append(el("h5", "", "arguments"), el("pre", "output", item.arguments || ""));
    if (item.result) content.append(el("h5", "", "result"), el("pre", "output", item.result));
    if (item.error) content.append(el("h5", "", "error"), el("pre", "output error", item.error));
    const name = `tool ${item.server ? `${item.server}.` : ""}${item.tool || "?"}  ·  ${item.status}${
      item.duration_ms !== undefined ? ` · ${duration(item.duration_ms)}` : ""}`;
    li.append(collapsible(name, content));
  } else if (item.type === "message") {
    const body = el("div", "body");
    body.innerHTML = renderMarkdown(item.text || "");
    li.append(el("h4", "", "Agent"), body);
  } else if (item.type === "web_search") {
    li.append(el("h4", "", "Web search"), el("div", "text", item.text || ""));
  } else {
    li.append(el("h4", "", item.text || "step"));
  }
  return li;
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
  });
  socket.addEventListener("close", () => {
    if (generation !== state.generation) return;
    $("connection").textContent = "reconnecting…";
    const delay = state.backoff;
    state.backoff = Math.min(state.backoff * 2, 10000);
    setTimeout(() => generation === state.generation && connect(generation), delay);
  });
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
    live.items.set(event.item.id, event.item);
    if (!state.searching) liveEntry();
    if (state.turn === live.turn) renderLive();
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
