// /tasks/{id}: one task, from the events the server kept or from the result backend, with
// its result or traceback and its events; re-read when the stream reports it changed.

import { rateLimit, revokeTask } from "./actions.js";
import { getJSON } from "./api.js";
import { facts, fill, h, link, notice, stateBadge } from "./dom.js";
import { clock, duration, fullDate } from "./format.js";
import { isFinal } from "./view-tasks.js";

const when = (epoch) => (epoch === null || epoch === undefined ? null
  : h("span", { title: fullDate(epoch) }, clock(epoch)));

const taskLink = (id) => (id ? link(`/tasks/${encodeURIComponent(id)}`, h("span", { class: "mono" }, id)) : null);

/** A labelled block of preformatted text, or nothing when there is no text. */
function block(title, text, cls = "") {
  if (text === null || text === undefined || text === "") return null;
  return h("section", { class: "block" }, h("h2", null, title), h("pre", { class: cls }, text));
}

function eventsTable(events) {
  if (!events || !events.length) return null;
  return h("section", { class: "block" }, h("h2", null, "Events"), h("div", { class: "scroll" },
    h("table", { class: "grid compact", id: "task-events" },
      h("thead", null, h("tr", null, h("th", null, "Event"), h("th", null, "Time"), h("th", null, "Worker"))),
      h("tbody", null, events.map((e) => h("tr", null,
        h("td", null, e.type), h("td", { class: "time" }, when(e.timestamp) || "—"), h("td", null, e.hostname || "—")))))));
}

function detail(t, ctx, reload) {
  const done = (answer) => answer && reload();
  const actions = h("div", { class: "page-actions" },
    isFinal(t.state) ? null : h("button", {
      type: "button", class: "danger", id: "revoke-task", onclick: () => revokeTask(t).then(done),
    }, "Revoke…"),
    t.name ? h("button", {
      type: "button", id: "rate-limit-task",
      onclick: () => rateLimit({ task: t.name, workers: ctx.workers.map((w) => w.hostname) }),
    }, "Rate limit this task…") : null);
  const worker = t.worker ? link(`/tasks?worker=${encodeURIComponent(t.worker)}`, t.worker) : null;
  return [
    h("div", { class: "page-head" },
      h("h1", null, t.name || "Unknown task"), stateBadge(t.state), actions),
    h("p", { class: "crumbs" }, link("/tasks", "Tasks"), " / ", h("span", { class: "mono", id: "task-id" }, t.id)),
    h("div", { class: "detail-grid" },
      facts([
        ["State", stateBadge(t.state)], ["Worker", worker], ["Received", when(t.received)],
        ["Started", when(t.started)], ["Finished", when(t.finished)], ["Runtime", duration(t.runtime)],
        ["Retries", t.retries ?? null],
      ]),
      facts([
        ["ETA", t.eta ?? null], ["Expires", t.expires ?? null], ["Parent", taskLink(t.parent_id)],
        ["Root", taskLink(t.root_id)],
        ["Known from", t.source === "backend" ? "the result backend (no events kept)" : "worker events"],
      ])),
    block("Arguments", [t.args, t.kwargs].filter(Boolean).join("\n") || null, "args"),
    block("Result", t.result, "result"),
    block("Exception", t.exception, "exception"),
    block("Traceback", t.traceback, "traceback"),
    eventsTable(t.events),
  ];
}

export function mount(main, id, ctx) {
  let alive = true;
  let timer = null;
  let missing = false;

  let loading = 0;

  async function load() {
    const ticket = ++loading; // only the latest read is shown
    try {
      const answer = await getJSON(`/api/tasks/${encodeURIComponent(id)}`);
      if (!alive || ticket !== loading) return;
      missing = false;
      fill(main, detail(answer.task, ctx, load));
    } catch (err) {
      if (!alive || ticket !== loading) return;
      missing = err.status === 404;
      fill(main, h("div", { class: "page-head" }, h("h1", null, "Task")),
        h("p", { class: "crumbs" }, link("/tasks", "Tasks"), " / ", h("span", { class: "mono" }, id)),
        notice(missing ? "empty" : "error", missing
          ? "Neither the workers' events nor the result backend know this task (yet). This page updates when it appears."
          : err.message));
    }
  }

  ctx.setTitle(`Task ${id}`);
  fill(main, notice("info", "Loading…"));
  load();
  return {
    update(message) {
      // re-read at most every 300 ms while the stream reports this task changing
      if (!(message.tasks || []).some((t) => t.id === id) || timer !== null) return;
      timer = setTimeout(() => {
        timer = null;
        if (alive) load();
      }, 300);
    },
    tick() {
      if (missing) load();
    },
    unmount() {
      alive = false;
      clearTimeout(timer);
    },
  };
}
