// Building the page. Every piece of data reaches the DOM as text (textContent or an
// attribute value), never as markup: a task's arguments or a traceback cannot inject HTML.

import { ago, fullDate } from "./format.js";

const SVG_NS = "http://www.w3.org/2000/svg";

function build(el, attrs, children) {
  for (const [key, value] of Object.entries(attrs || {})) {
    if (value === null || value === undefined || value === false) continue;
    if (key === "class") el.setAttribute("class", value);
    else if (key === "dataset") Object.assign(el.dataset, value);
    else if (key.startsWith("on")) el.addEventListener(key.slice(2), value);
    else el.setAttribute(key, value === true ? "" : String(value));
  }
  append(el, children);
  return el;
}

/** An HTML element: h("td", {class: "num"}, "42", otherNode). */
export function h(tag, attrs, ...children) {
  return build(document.createElement(tag), attrs, children);
}

/** An SVG element, same calling convention as h(). */
export function s(tag, attrs, ...children) {
  return build(document.createElementNS(SVG_NS, tag), attrs, children);
}

/** Append children: nodes as they are, strings and numbers as text, null/false skipped. */
export function append(el, children) {
  for (const child of children.flat(Infinity)) {
    if (child === null || child === undefined || child === false) continue;
    el.append(child instanceof Node ? child : document.createTextNode(String(child)));
  }
  return el;
}

/** Replace all of an element's children. */
export function fill(el, ...children) {
  el.replaceChildren();
  return append(el, children);
}

/** Set an element's text only when it changed (keeps selections and avoids reflows). */
export function setText(el, text) {
  const value = text === null || text === undefined ? "" : String(text);
  if (el.textContent !== value) el.textContent = value;
}

/** A link the router handles (no reload). */
export function link(href, ...children) {
  return h("a", { href, "data-link": true }, ...children);
}

/** A task id as lists show it: its first 8 characters; the whole id in the tooltip. */
export function shortId(id) {
  const text = String(id ?? "");
  return h("span", { class: "mono", title: text }, text.length > 10 ? `${text.slice(0, 8)}…` : text);
}

/** A coloured badge for a task state. */
export function stateBadge(state) {
  return h("span", { class: `badge state-${String(state || "unknown").toLowerCase()}` }, state || "?");
}

/** A message block: "empty", "error" or "info". */
export function notice(kind, text) {
  return h("p", { class: `notice notice-${kind}` }, text);
}

/** A table with a header row; returns {table, tbody}. columns: [{label, class}]. */
export function table(columns, attrs = {}) {
  const head = h("tr", null, columns.map((c) => h("th", { class: c.class, scope: "col" }, c.label)));
  const tbody = h("tbody");
  const el = h("table", { class: "grid", ...attrs }, h("thead", null, head), tbody);
  return { table: el, tbody };
}

/** A definition list from [label, value] pairs (value: text or node). */
export function facts(pairs) {
  return h("dl", { class: "facts" }, pairs.map(([label, value]) => [h("dt", null, label), h("dd", null, value ?? "—")]));
}

/**
 * Keep a tbody's rows in step with `items` (in that order): a row is rebuilt only when its
 * item changed, rows of items gone are removed. `rows` is the caller's Map (key -> row).
 */
export function syncRows(tbody, rows, items, key, build) {
  const wanted = new Set();
  let previous = null;
  for (const item of items) {
    const id = key(item);
    wanted.add(id);
    const sig = JSON.stringify(item);
    let row = rows.get(id);
    if (!row || row.sig !== sig) {
      const tr = build(item);
      if (row) row.tr.replaceWith(tr);
      row = { tr, sig };
      rows.set(id, row);
    }
    const expected = previous ? previous.nextSibling : tbody.firstChild;
    if (expected !== row.tr) tbody.insertBefore(row.tr, expected);
    previous = row.tr;
  }
  for (const [id, row] of rows) {
    if (!wanted.has(id)) {
      row.tr.remove();
      rows.delete(id);
    }
  }
}

/** A cell showing how long ago `epoch` was; app.js refreshes every [data-ago] cell. */
export function agoCell(epoch) {
  return h("td", { class: "ago", "data-ago": epoch ?? "", title: fullDate(epoch) }, ago(epoch));
}

/** Refresh the text of every [data-ago] element under `root`. */
export function refreshAges(root) {
  for (const el of root.querySelectorAll("[data-ago]")) {
    const epoch = el.dataset.ago === "" ? null : Number(el.dataset.ago);
    setText(el, ago(epoch));
  }
}
