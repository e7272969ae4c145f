"use strict";
// A small, safe Markdown renderer for agent replies.
//
// Safety rests on one rule: every piece of the input is HTML-escaped before it reaches the
// output, and the only markup added is a fixed set of tags with no attributes, except <a>, whose
// href must be an http(s) URL (escaped, so it cannot leave its quotes). Code spans and links are
// cut out first (into numbered slots, marked by NUL characters, which are removed from the input
// and never part of a URL) so that emphasis never rewrites a URL or code.
// Supports: ``` fenced code, `inline code`, **bold**/__bold__, *italic*/_italic_,
// [text](https://…) and bare http(s) links, - / * / 1. lists, # headings, paragraphs,
// > blockquotes (nested up to MAX_QUOTE_DEPTH, rendered by this same function), and tables
// (a header row, a |---|---| delimiter row, body rows; cells split on | unless escaped as \|).

const ESCAPES = { "&": "&amp;", "<": "&lt;", ">": "&gt;", '"': "&quot;", "'": "&#39;" };

function escapeHtml(text) {
  return String(text).replace(/[&<>"']/g, (c) => ESCAPES[c]);
}

function emphasis(html) {
  return html
    .replace(/\*\*(?=\S)([^*]*?\S)\*\*/g, "<strong>$1</strong>")
    .replace(/(^|[^\w])__(?=\S)([^_]*?\S)__(?!\w)/g, "$1<strong>$2</strong>")
    .replace(/(^|[^\w*])\*(?=[^\s*])([^*]*?[^\s*])?\*(?![\w*])/g, (m, pre, rest) =>
      m.length > 2 ? `${pre}<em>${m.slice(pre.length + 1, -1)}</em>` : m)
    .replace(/(^|[^\w])_(?=[^\s_])([^_]*?[^\s_])?_(?!\w)/g, (m, pre) =>
      m.length > 2 ? `${pre}<em>${m.slice(pre.length + 1, -1)}</em>` : m);
}

function inline(text) {
  const slots = [];
  const keep = (html) => `\u0000${slots.push(html) - 1}\u0000`;
  const link = (href, labelHtml) =>
    keep(`<a href="${escapeHtml(href)}" target="_blank" rel="noopener noreferrer">${labelHtml}</a>`);
  let s = String(text).replace(/\u0000/g, "");
  s = s.replace(/`([^`\n]+)`/g, (_, code) => keep(`<code>${escapeHtml(code)}</code>`));
  s = s.replace(
    /\[([^\]\n]+)\]\((https?:\/\/[^\s()\u0000]+)\)|\bhttps?:\/\/[^\s<>"'`\u0000]+/g,
    (match, label, url) => {
      if (label !== undefined) return link(url, emphasis(escapeHtml(label)));
      const bare = match.replace(/[.,;:!?)\]]+$/, ""); // trailing punctuation ends the sentence
      return link(bare, escapeHtml(bare)) + escapeHtml(match.slice(bare.length));
    },
  );
  // A slot may hold earlier slots (a code span in a link label): substitute until none is left.
  // Each slot refers only to slots made before it, so this ends; the bound and the final strip
  // only guard against a mistake here ever showing a raw marker.
  let html = emphasis(escapeHtml(s));
  for (let round = 0; round <= slots.length && html.includes("\u0000"); round++) {
    html = html.replace(/\u0000(\d+)\u0000/g, (_, i) => slots[Number(i)] ?? "");
  }
  return html.replace(/\u0000/g, "");
}

const MAX_QUOTE_DEPTH = 8; // deeper ">" stays text: the renderer recurses once per level
const QUOTE = /^ {0,3}> ?(.*)$/;
const TABLE_DELIMITER = /^ *\|? *:?-+:? *(?:\| *:?-+:? *)*\|? *$/;

// A table row's cells: outer pipes dropped, split on "|" except an escaped "\|" or one inside a
// `code span` (when the row's backticks pair up).
function tableCells(line) {
  let row = line.trim();
  if (row.startsWith("|")) row = row.slice(1);
  if (row.endsWith("|") && !row.endsWith("\\|")) row = row.slice(0, -1);
  const pairedTicks = (row.match(/`/g) || []).length % 2 === 0;
  const cells = [""];
  let inCode = false;
  for (let i = 0; i < row.length; i++) {
    if (row[i] === "\\" && row[i + 1] === "|") {
      cells[cells.length - 1] += "|";
      i++;
      continue;
    }
    if (row[i] === "`" && pairedTicks) inCode = !inCode;
    if (row[i] === "|" && !inCode) cells.push("");
    else cells[cells.length - 1] += row[i];
  }
  return cells.map((cell) => cell.trim());
}

// Whether a table starts at lines[i]: a row with a pipe, then a delimiter row of as many cells.
function tableStarts(lines, i) {
  return (
    lines[i].includes("|") &&
    i + 1 < lines.length &&
    TABLE_DELIMITER.test(lines[i + 1]) &&
    tableCells(lines[i]).length === tableCells(lines[i + 1]).length
  );
}

function renderTable(header, rows) {
  const width = header.length;
  const cells = (row, tag) =>
    Array.from({ length: width }, (_, k) => `<${tag}>${inline(row[k] ?? "")}</${tag}>`).join("");
  const body = rows.map((row) => `<tr>${cells(row, "td")}</tr>`).join("");
  return `<table><thead><tr>${cells(header, "th")}</tr></thead>${body ? `<tbody>${body}</tbody>` : ""}</table>`;
}

function renderMarkdown(text, depth = 0) {
  const lines = String(text).replace(/\r\n?/g, "\n").split("\n");
  const out = [];
  let para = [];
  let list = null;
  const flushPara = () => {
    if (para.length) out.push(`<p>${para.map(inline).join("<br>")}</p>`);
    para = [];
  };
  const flushList = () => {
    if (list) out.push(`<${list.tag}>${list.items.map((i) => `<li>${inline(i)}</li>`).join("")}</${list.tag}>`);
    list = null;
  };
  for (let i = 0; i < lines.length; i++) {
    const line = lines[i];
    const fence = line.match(/^\s*```\s*([\w+.-]*)\s*$/);
    if (fence) {
      flushPara();
      flushList();
      const code = [];
      for (i++; i < lines.length && !/^\s*```\s*$/.test(lines[i]); i++) code.push(lines[i]);
      out.push(`<pre><code>${escapeHtml(code.join("\n"))}</code></pre>`);
      continue;
    }
    if (depth < MAX_QUOTE_DEPTH && QUOTE.test(line)) {
      flushPara();
      flushList();
      const quoted = [];
      for (; i < lines.length && QUOTE.test(lines[i]); i++) quoted.push(lines[i].match(QUOTE)[1]);
      i--;
      out.push(`<blockquote>${renderMarkdown(quoted.join("\n"), depth + 1)}</blockquote>`);
      continue;
    }
    if (tableStarts(lines, i)) {
      flushPara();
      flushList();
      const header = tableCells(line);
      const rows = [];
      for (i += 2; i < lines.length && lines[i].includes("|") && lines[i].trim(); i++) {
        rows.push(tableCells(lines[i]));
      }
      i--;
      out.push(renderTable(header, rows));
      continue;
    }
    const heading = line.match(/^(#{1,6})\s+(.*)$/);
    if (heading) {
      flushPara();
      flushList();
      const level = Math.min(heading[1].length + 2, 6); // the page owns h1/h2
      out.push(`<h${level}>${inline(heading[2])}</h${level}>`);
      continue;
    }
    const item = line.match(/^\s*(?:([-*+])|\d{1,9}[.)])\s+(.*)$/);
    if (item) {
      flushPara();
      const tag = item[1] ? "ul" : "ol";
      if (!list || list.tag !== tag) {
        flushList();
        list = { tag, items: [] };
      }
      list.items.push(item[2]);
    } else if (!line.trim()) {
      flushPara();
      flushList();
    } else if (list && /^\s{2,}\S/.test(line)) {
      list.items[list.items.length - 1] += ` ${line.trim()}`;
    } else {
      flushList();
      para.push(line);
    }
  }
  flushPara();
  flushList();
  return out.join("");
}
