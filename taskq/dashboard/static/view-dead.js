// /dead and /dead/{id}: messages the workers buried, with requeue and purge.
// The list is read on arrival, after each action, on "Refresh", and when the stream says
// the dead-letter queue's depth changed (reading it means taking messages off the broker
// and putting them back, so it is not polled).

import { purgeDead, requeueDead } from "./actions.js";
import { getJSON } from "./api.js";
import { facts, fill, h, link, notice, setText, shortId, syncRows, table } from "./dom.js";
import { count, isoDate } from "./format.js";

const LIMIT = 100;
const COLUMNS = [
  { label: "ID" }, { label: "Task" }, { label: "Reason" }, { label: "Deliveries", class: "num" },
  { label: "From queue" }, { label: "Dead since" }, { label: "Worker" }, { label: "", class: "actions" },
];

const deadHref = (id) => `/dead/${encodeURIComponent(id)}`;

function letterRow(d, done) {
  return h("tr", { "data-dead-id": d.id ?? "" },
    h("td", { class: "id" }, d.id ? link(deadHref(d.id), shortId(d.id)) : "—"),
    h("td", null, d.task || "—"),
    h("td", { class: "reason" }, d.reason),
    h("td", { class: "num" }, count(d.deliveries)),
    h("td", { class: "mono" }, d.queue || "—"),
    h("td", { class: "time", title: d.dead_at || "" }, isoDate(d.dead_at)),
    h("td", { class: "host", title: d.worker || "" }, d.worker || "—"),
    h("td", { class: "actions" }, d.id ? h("button", {
      type: "button", class: "small", onclick: () => requeueDead([d.id], `${d.task || "the message"} ${d.id}`).then(done),
    }, "Requeue") : null),
  );
}

/** The dead-letter queue's depth in a stream message, or undefined if it is not there. */
function deadDepth(message) {
  const list = Array.isArray(message.queues) ? message.queues : message.queues?.queues;
  return (list || []).find((q) => q.dead_letter)?.depth;
}

export function mountList(main, _param, ctx) {
  const { table: grid, tbody } = table(COLUMNS, { id: "dead-table" });
  const rows = new Map();
  const info = h("span", { class: "muted", id: "dead-count" });
  const status = h("div", { class: "status-line" });
  let alive = true;
  let queue = null;
  let depth;

  const done = (answer) => answer && load();
  async function load() {
    try {
      const answer = await getJSON(`/api/dead?limit=${LIMIT}`);
      if (!alive) return;
      queue = answer.queue;
      const letters = answer.dead_letters || [];
      syncRows(tbody, rows, letters, (d) => d.id ?? JSON.stringify(d), (d) => letterRow(d, done));
      setText(info, `${count(letters.length)} in ${queue || "the dead-letter queue"}${letters.length >= LIMIT ? " (first " + LIMIT + " shown)" : ""}`);
      fill(status,
        answer.error ? notice("error", answer.error) : null,
        letters.length || answer.error ? null : notice("empty", "No dead letters: every message was run or is still queued."));
    } catch (err) {
      if (alive) fill(status, notice("error", err.message));
    }
  }

  ctx.setTitle("Dead letters");
  main.append(
    h("div", { class: "page-head" }, h("h1", null, "Dead letters"), info,
      h("div", { class: "page-actions" },
        h("button", { type: "button", class: "small", id: "dead-refresh", onclick: load }, "Refresh"),
        h("button", { type: "button", class: "small", id: "dead-requeue-all", onclick: () => requeueDead(null).then(done) }, "Requeue all…"),
        h("button", { type: "button", class: "small danger", id: "dead-purge", onclick: () => purgeDead(queue).then(done) }, "Purge…"))),
    h("div", { class: "scroll" }, grid), status);
  load();
  return {
    update(message) {
      const now = deadDepth(message);
      if (now === undefined || now === depth) return;
      const first = depth === undefined;
      depth = now;
      if (!first) load();
    },
    unmount() {
      alive = false;
    },
  };
}

export function mountLetter(main, id, ctx) {
  let alive = true;

  async function load() {
    try {
      const { dead_letter: d } = await getJSON(`/api/dead/${encodeURIComponent(id)}`);
      if (alive) fill(main, letterDetail(d, ctx));
    } catch (err) {
      if (!alive) return;
      fill(main, h("div", { class: "page-head" }, h("h1", null, "Dead letter")), crumbs(id),
        notice(err.status === 404 ? "empty" : "error",
          err.status === 404 ? "No dead letter with this id (it may have been requeued or purged)." : err.message));
    }
  }

  ctx.setTitle(`Dead letter ${id}`);
  fill(main, notice("info", "Loading…"));
  load();
  return {
    unmount() {
      alive = false;
    },
  };
}

const crumbs = (id) => h("p", { class: "crumbs" }, link("/dead", "Dead letters"), " / ", h("span", { class: "mono" }, id));

function letterDetail(d, ctx) {
  const requeue = () => requeueDead([d.id], `${d.task || "the message"} ${d.id}`)
    .then((answer) => answer && ctx.navigate("/dead"));
  return [
    h("div", { class: "page-head" }, h("h1", null, d.task || "Dead letter"),
      h("div", { class: "page-actions" },
        h("button", { type: "button", class: "primary", id: "dead-requeue", onclick: requeue }, "Requeue…"))),
    crumbs(d.id),
    facts([
      ["Reason", h("span", { class: "reason" }, d.reason)], ["Deliveries", count(d.deliveries)],
      ["From queue", d.queue], ["Dead since", isoDate(d.dead_at)], ["Worker", d.worker],
      ["Task", d.id ? link(`/tasks/${encodeURIComponent(d.id)}`, "its task page") : null],
    ]),
    d.args ? h("section", { class: "block" }, h("h2", null, "Arguments"), h("pre", { class: "args" }, d.args)) : null,
    d.kwargs ? h("section", { class: "block" }, h("h2", null, "Keyword arguments"), h("pre", { class: "args" }, d.kwargs)) : null,
    d.body ? h("section", { class: "block" }, h("h2", null, `Body${d.content_type ? ` (${d.content_type})` : ""}`),
      h("pre", { class: "body" }, d.body)) : null,
    h("section", { class: "block" }, h("h2", null, "Headers"),
      h("pre", { class: "headers" }, JSON.stringify(d.headers || {}, null, 2))),
  ];
}
