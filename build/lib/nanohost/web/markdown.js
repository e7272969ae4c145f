"use strict";
// A small, safe Markdown renderer for agent replies.
//
// Safety rests on one rule: every piece of the input is HTML-escaped before it reaches the
// output, and the only markup added is a fixed set of tags with no attributes, except <a>, whose
// href must be an http(s) URL (escaped, so it cannot leave its quotes). Code spans and links are
// cut out first (into numbered slots, marked by NUL characters, which are removed from the input
// and never part of a URL) so that emphasis never rewrites a URL or code.
// Supports: ``` fenced code, `inline code`, **bold**/__bold__, *italic*/_italic_,
// [text](https://…) and bare http(s) links, - / * / 1. lists, # headings, paragraphs.

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

function renderMarkdown(text) {
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
