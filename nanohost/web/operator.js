"use strict";
// The operator view: the web chat's groups with their state (running, idle, failed, queued), last
// activity and last error, and a button to restart each or take a snapshot of it. Buttons POST with
// the X-Nanohost header (the web chat's CSRF rule); the list refreshes every few seconds.

const $ = (id) => document.getElementById(id);
const REFRESH_MS = 5000;

async function call(path, options = {}) {
  const response = await fetch(path, {
    credentials: "same-origin",
    ...options,
    headers: { "X-Nanohost": "1", ...(options.headers || {}) },
  });
  if (response.status === 401) {
    location.assign("/");
    throw new Error("logged out");
  }
  const body = await response.json().catch(() => ({}));
  if (!response.ok) throw new Error(body.error || `${response.status} ${response.statusText}`);
  return body;
}

function cell(text, className) {
  const td = document.createElement("td");
  if (className) td.className = className;
  td.textContent = text;
  return td;
}

function when(iso) {
  if (!iso) return "never";
  const moment = new Date(iso);
  return isNaN(moment) ? iso : moment.toLocaleString([], { dateStyle: "short", timeStyle: "medium" });
}

function action(label, group, path, done) {
  const button = document.createElement("button");
  button.type = "button";
  button.textContent = label;
  button.dataset.action = path;
  button.addEventListener("click", async () => {
    button.disabled = true;
    $("error").hidden = true;
    try {
      const body = await call(`/web/operator/groups/${encodeURIComponent(group)}/${path}`, { method: "POST" });
      $("notice").textContent = done(body);
      await load();
    } catch (error) {
      $("error").textContent = `${label} ${group}: ${error.message}`;
      $("error").hidden = false;
    } finally {
      button.disabled = false;
    }
  });
  return button;
}

async function load() {
  const { groups } = await call("/web/operator/groups");
  const rows = groups.map((group) => {
    const tr = document.createElement("tr");
    tr.dataset.group = group.name;
    const name = document.createElement("td");
    const link = document.createElement("a");
    link.href = `/viewer?group=${encodeURIComponent(group.name)}`;
    link.textContent = group.name;
    name.append(link);
    const actions = document.createElement("td");
    actions.className = "actions";
    actions.append(
      action("Restart", group.name, "restart", () => `restarting ${group.name}`),
      action("Snapshot", group.name, "snapshot", (body) => `${group.name}: ${body.summary}`),
    );
    tr.append(
      name,
      cell(group.state, `state ${group.state}`),
      cell(when(group.last_activity), "when"),
      cell(group.last_error || "", "last-error"),
      actions,
    );
    return tr;
  });
  $("group-rows").replaceChildren(...rows);
}

load().catch((error) => {
  $("error").textContent = `Could not load the groups: ${error.message}`;
  $("error").hidden = false;
});
setInterval(() => load().catch(() => {}), REFRESH_MS);
