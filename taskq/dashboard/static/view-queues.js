// /queues: each queue's depth and consumers, re-read by the server every few seconds.

import { getJSON } from "./api.js";
import { fill, h, link, notice, setText, syncRows, table } from "./dom.js";
import { ago, count, fullDate } from "./format.js";

const COLUMNS = [
  { label: "Queue" }, { label: "Waiting", class: "num" }, { label: "Consumers", class: "num" }, { label: "" },
];

function queueRow(q) {
  const depth = q.depth ?? null;
  return h("tr", { "data-queue": q.name, class: q.dead_letter ? "is-dead" : "" },
    h("td", { class: "mono" }, q.dead_letter ? link("/dead", q.name) : q.name),
    h("td", { class: `num ${depth > 0 ? "strong" : ""}` }, count(depth)),
    h("td", { class: `num ${q.consumers === 0 && !q.dead_letter && depth > 0 ? "warn" : ""}` }, count(q.consumers)),
    h("td", null, q.dead_letter ? h("span", { class: "tag tag-dead" }, "dead letters") : null),
  );
}

export function mount(main, _param, ctx) {
  const { table: grid, tbody } = table(COLUMNS, { id: "queues-table" });
  const readAt = h("span", { class: "muted", "data-read-at": "" });
  const status = h("div", { class: "status-line" });
  const rows = new Map();
  let alive = true;
  let lastRead = null;

  let shown = -1; // the version of what is on screen: an older answer is not shown

  const show = (answer, version = 0) => {
    if (version < shown) return;
    shown = version;
    const queues = Array.isArray(answer) ? answer : answer.queues || [];
    if (!Array.isArray(answer) && "read_at" in answer) lastRead = answer.read_at;
    syncRows(tbody, rows, queues, (q) => q.name, queueRow);
    tick();
    const error = Array.isArray(answer) ? null : answer.error;
    fill(status,
      error ? notice("error", `Could not read the queues: ${error}`) : null,
      queues.length ? null : notice("empty", "No queue known yet: queues are learnt from the workers."));
  };
  const tick = () => {
    setText(readAt, lastRead ? `read ${ago(lastRead)}` : "");
    readAt.title = fullDate(lastRead);
  };

  ctx.setTitle("Queues");
  main.append(h("div", { class: "page-head" }, h("h1", null, "Queues"), readAt),
    h("div", { class: "scroll" }, grid), status);
  getJSON("/api/queues").then((answer) => alive && show(answer, answer.version ?? 0),
    (err) => alive && fill(status, notice("error", err.message)));
  return {
    update(message) {
      if (message.queues) {
        if (Array.isArray(message.queues)) lastRead = Date.now() / 1000;
        show(message.queues, message.version ?? 0);
      }
    },
    tick,
    unmount() {
      alive = false;
    },
  };
}
