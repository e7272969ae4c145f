"use strict";
// Rendering one turn as the agent lived it: shared by the conversation viewer (viewer.js) and the
// chat's steps panel (chat.js). A turn is the archive's JSON line (nanohost/viewer.py) or the live
// feed's state. Everything the agent wrote is shown as text (textContent), or through
// markdown.js's renderMarkdown, which escapes everything first.

const Turns = (() => {
  const SMALL_DIFF = 3000; // characters: a diff this small is shown open, a larger one collapsed

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

  function collapsible(summary, content, open = false) {
    const details = el("details");
    details.open = open;
    details.append(el("summary", "", summary), content);
    return details;
  }

  // A unified diff, line by line; a file added or deleted whole (Codex gives its content) is all
  // added or all removed lines.
  function diffBlock(diff, change = "") {
    const pre = el("pre", "diff");
    const whole = !/^(---|@@|diff )/m.test(diff) && (change === "add" || change === "delete");
    for (const line of diff.replace(/\n$/, "").split("\n")) {
      if (whole) {
        pre.append(el("span", change === "add" ? "add" : "del", `${change === "add" ? "+" : "-"}${line}\n`));
        continue;
      }
      const kind = line.startsWith("+") && !line.startsWith("+++") ? "add"
        : line.startsWith("-") && !line.startsWith("---") ? "del"
        : line.startsWith("@@") ? "hunk" : "";
      pre.append(el("span", kind, `${line}\n`));
    }
    return pre;
  }

  function markdown(text) {
    const body = el("div", "body");
    body.innerHTML = renderMarkdown(text || ""); // escapes everything first (markdown.js)
    return body;
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
        else li.append(collapsible(name, diffBlock(change.diff, change.kind), change.diff.length <= SMALL_DIFF));
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
      li.append(el("h4", "", "Agent"), markdown(item.text));
    } else if (item.type === "web_search") {
      li.append(el("h4", "", "Web search"), el("div", "text", item.text || ""));
    } else {
      li.append(el("h4", "", item.text || "step"));
    }
    return li;
  }

  function facts(turn) {
    const found = [];
    if (turn.model) found.push(`model ${turn.model}`);
    const usage = turn.usage || {};
    if (usage.total !== undefined) {
      const parts = [`${usage.total} tokens`];
      if (usage.input !== undefined) {
        parts.push(`${usage.input} in${usage.cached_input ? ` (${usage.cached_input} cached)` : ""}`);
      }
      if (usage.output !== undefined) parts.push(`${usage.output} out`);
      if (usage.reasoning) parts.push(`${usage.reasoning} reasoning`);
      found.push(parts.join(", "));
    }
    if (turn.duration_ms !== undefined && turn.duration_ms !== null) found.push(`took ${duration(turn.duration_ms)}`);
    return found;
  }

  // Fill `article` with `turn`. Options: permalink (URL), linkText, title, compact (the chat's
  // panel: no prompts, no reply, since the chat shows both), back (a handler for a "← Turns" button).
  function render(article, turn, options = {}) {
    article.replaceChildren();
    article.dataset.turn = turn.turn;
    if (options.back) {
      const back = el("button", "quiet back", "← Turns");
      back.type = "button";
      back.addEventListener("click", options.back);
      article.append(back);
    }
    const title = el("h3", "", `${options.title || "Turn"} · ${when(turn.started_at)}`);
    title.append(" ", el("span", `status ${turn.status}`, turn.live ? `${turn.status} (live)` : turn.status));
    const meta = el("p", "turn-meta");
    const found = facts(turn);
    if (found.length) meta.append(`${found.join(" · ")} · `);
    const link = el("a", "permalink", options.linkText || "link to this turn");
    link.href = options.permalink;
    meta.append(link);
    article.append(title, meta);
    if (!options.compact) {
      for (const prompt of turn.prompts || []) {
        const block = el("section", "step user");
        block.append(el("h4", "", "User"), el("div", "text", prompt));
        article.append(block);
      }
    }
    const steps = el("ol", "steps");
    for (const item of turn.items || []) {
      if (item.type === "message" && !turn.live && item.text === turn.reply) continue; // shown as the reply
      steps.append(renderItem(item));
    }
    if (turn.items_left_out) steps.append(el("li", "step hint", `${turn.items_left_out} more steps were not archived`));
    if (turn.missed)
      steps.append(el("li", "step hint", "Some steps were not shown live; the archived turn has them once it ends."));
    article.append(steps);
    if (turn.error) article.append(el("p", "error", turn.error));
    if (turn.reply && !options.compact) {
      const reply = el("section", "step reply");
      reply.append(el("h4", "", "Reply"), markdown(turn.reply));
      article.append(reply);
    }
  }

  return { el, duration, when, render, renderItem };
})();
