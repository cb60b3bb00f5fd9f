// /workers: every worker seen, online or not, with pool and shutdown actions.

import { resizePool, shutdownWorker } from "./actions.js";
import { getJSON } from "./api.js";
import { agoCell, fill, h, link, notice, syncRows, table } from "./dom.js";
import { count } from "./format.js";

const COLUMNS = [
  { label: "Worker" }, { label: "Pool", class: "num" }, { label: "Active", class: "num" },
  { label: "Processed", class: "num" }, { label: "Load avg" }, { label: "Heartbeat" },
  { label: "Queues" }, { label: "Software" }, { label: "PID", class: "num" }, { label: "", class: "actions" },
];

function button(label, title, onclick, cls = "") {
  return h("button", { type: "button", class: `small ${cls}`.trim(), title, onclick }, label);
}

function workerRow(w, refresh) {
  const done = (answer) => answer && refresh();
  const status = w.online ? "online" : "offline";
  return h("tr", { "data-hostname": w.hostname, class: w.online ? "" : "is-offline" },
    h("td", null,
      h("span", { class: `dot dot-${status}`, title: status, "aria-label": status }),
      link(`/tasks?worker=${encodeURIComponent(w.hostname)}`, w.hostname),
      w.online ? null : h("span", { class: "tag" }, "offline")),
    h("td", { class: "num" }, count(w.pool_size)),
    h("td", { class: "num" }, count(w.active)),
    h("td", { class: "num" }, count(w.processed)),
    h("td", { class: "mono" }, w.loadavg ? w.loadavg.map((x) => Number(x).toFixed(2)).join(" ") : "—"),
    agoCell(w.last_heartbeat),
    h("td", { class: "queues" }, (w.queues || []).map((q) => h("span", { class: "tag" }, q))),
    h("td", { class: "muted" }, [w.sw_ident, w.sw_ver].filter(Boolean).join(" ") || "—"),
    h("td", { class: "num" }, w.pid ?? "—"),
    h("td", { class: "actions" },
      button("Pool +", "Grow the pool", () => resizePool(w.hostname, 1).then(done)),
      button("Pool −", "Shrink the pool", () => resizePool(w.hostname, -1).then(done)),
      button("Shut down", "Shut the worker down", () => shutdownWorker(w.hostname).then(done), "danger-text")),
  );
}

export function mount(main, _param, ctx) {
  const { table: grid, tbody } = table(COLUMNS, { id: "workers-table" });
  const status = h("div", { class: "status-line" });
  const rows = new Map();
  let alive = true;

  let shown = -1; // the version of the list on screen: an older answer is not shown

  const show = (workers, version = 0) => {
    if (version < shown) return;
    shown = version;
    ctx.workers = workers;
    syncRows(tbody, rows, workers, (w) => w.hostname, (w) => workerRow(w, refresh));
    fill(status, workers.length ? null : notice("empty",
      "No worker seen yet. Workers appear here once they send events: start them with -E."));
  };
  async function refresh() {
    try {
      const answer = await getJSON("/api/workers");
      if (alive) show(answer.workers || [], answer.version ?? 0);
    } catch (err) {
      if (alive) fill(status, notice("error", err.message));
    }
  }

  ctx.setTitle("Workers");
  main.append(h("div", { class: "page-head" }, h("h1", null, "Workers")),
    h("div", { class: "scroll" }, grid), status);
  if (ctx.workers.length) show(ctx.workers);
  refresh();
  return {
    update(message) {
      if (Array.isArray(message.workers)) show(message.workers, message.version ?? 0);
    },
    unmount() {
      alive = false;
    },
  };
}
