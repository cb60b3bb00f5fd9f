// /tasks: the tasks the server keeps, filtered by name, state and worker; rows change in
// place as the stream reports them (no reload).

import { rateLimit, revokeTask } from "./actions.js";
import { getJSON, query } from "./api.js";
import { fill, h, link, notice, setText, shortId, stateBadge, syncRows, table } from "./dom.js";
import { clock, count, duration, fullDate } from "./format.js";

const LIMIT = 100;
const FINAL = new Set(["SUCCESS", "FAILURE", "REVOKED", "REJECTED"]);
const STATES = ["PENDING", "RECEIVED", "STARTED", "SUCCESS", "FAILURE", "RETRY", "REVOKED", "REJECTED"];
const FILTERS = ["name", "state", "worker"];
const COLUMNS = [
  { label: "State" }, { label: "Task" }, { label: "ID" }, { label: "Arguments" }, { label: "Worker" },
  { label: "Received" }, { label: "Started" }, { label: "Runtime", class: "num" }, { label: "", class: "actions" },
];

export const isFinal = (state) => FINAL.has(state);

/** "(1, 2)" and "{'x': 3}" as one short text; the full text goes in the tooltip. */
function argsText(t) {
  const parts = [t.args, t.kwargs].filter((x) => x && x !== "()" && x !== "{}");
  return parts.join(" ") || "";
}

function taskRow(t, act) {
  const args = argsText(t);
  return h("tr", { "data-task-id": t.id, "data-state": t.state },
    h("td", { class: "state" }, stateBadge(t.state)),
    h("td", { class: "name" }, t.name || "—"),
    h("td", { class: "id" }, link(`/tasks/${encodeURIComponent(t.id)}`, shortId(t.id))),
    h("td", { class: "mono args", title: args }, args),
    h("td", { class: "host", title: t.worker || "" }, t.worker || "—"),
    h("td", { class: "time", title: fullDate(t.received) }, clock(t.received)),
    h("td", { class: "time", title: fullDate(t.started) }, clock(t.started)),
    h("td", { class: "num" }, duration(t.runtime)),
    h("td", { class: "actions" }, isFinal(t.state) ? null
      : h("button", { type: "button", class: "small danger-text", onclick: () => act(t) }, "Revoke")),
  );
}

function select(name, label, values, current) {
  const options = [...new Set([...values, ...(current ? [current] : [])])].sort();
  return h("label", { class: "filter" }, h("span", null, label),
    h("select", { name, "data-filter": name },
      h("option", { value: "" }, "All"),
      options.map((v) => h("option", { value: v, selected: v === current }, v))));
}

function matches(t, filters) {
  return (!filters.name || t.name === filters.name)
    && (!filters.state || t.state === filters.state)
    && (!filters.worker || t.worker === filters.worker);
}

/**
 * Replace `tasks` by the rows of a fresh answer, except rows the stream brought while it
 * was on its way: those are newer than the answer and stay.
 */
function keepNewer(tasks, answer, filters) {
  const fresh = new Map((answer.tasks || []).map((t) => [t.id, t]));
  for (const t of tasks.values()) {
    const known = fresh.get(t.id);
    const newer = known ? (t.version ?? 0) > (known.version ?? 0) : (t.version ?? 0) > (answer.version ?? 0);
    if (newer && matches(t, filters)) fresh.set(t.id, t);
  }
  tasks.clear();
  for (const [id, t] of fresh) tasks.set(id, t);
}

export function mount(main, _param, ctx) {
  const params = new URLSearchParams(location.search);
  const filters = Object.fromEntries(FILTERS.map((f) => [f, params.get(f) || ""]));
  const known = { name: new Set(), state: new Set(STATES), worker: new Set() };
  const tasks = new Map(); // id -> T, the rows shown
  const rows = new Map();
  const { table: grid, tbody } = table(COLUMNS, { id: "tasks-table" });
  const form = h("form", { class: "filters", id: "task-filters" });
  const shown = h("span", { class: "muted", id: "tasks-count" });
  const status = h("div", { class: "status-line" });
  let total = 0;
  let alive = true;
  let loading = 0;

  const afterAction = (answer) => answer && load();
  const drawFilters = () => fill(form,
    select("name", "Task", known.name, filters.name),
    select("state", "State", known.state, filters.state),
    select("worker", "Worker", known.worker, filters.worker),
    h("button", { type: "button", class: "small", onclick: clear, disabled: !FILTERS.some((f) => filters[f]) }, "Clear"));
  const draw = () => {
    const list = [...tasks.values()].sort((a, b) => (b.version ?? 0) - (a.version ?? 0)).slice(0, LIMIT);
    syncRows(tbody, rows, list, (t) => t.id, (t) => taskRow(t, (task) => revokeTask(task).then(afterAction)));
    setText(shown, `${count(list.length)} shown of ${count(Math.max(total, list.length))} kept`);
    fill(status, list.length ? null : notice("empty",
      FILTERS.some((f) => filters[f]) ? "No task matches these filters." : "No task seen yet."));
  };
  const learn = (answer) => {
    for (const [key, list] of [["name", answer.names], ["worker", answer.workers], ["state", answer.states]]) {
      for (const v of list || []) known[key].add(v);
    }
  };

  async function load() {
    const ticket = ++loading;
    try {
      const answer = await getJSON(`/api/tasks${query({ ...filters, limit: LIMIT })}`);
      if (!alive || ticket !== loading) return;
      learn(answer);
      total = answer.total ?? 0;
      keepNewer(tasks, answer, filters);
      drawFilters();
      draw();
    } catch (err) {
      if (alive && ticket === loading) fill(status, notice("error", err.message));
    }
  }
  function clear() {
    for (const f of FILTERS) filters[f] = "";
    changed();
  }
  function changed() {
    ctx.navigate(`/tasks${query(filters)}`, { replace: true, keepView: true });
    drawFilters();
    load();
  }
  function onStream(list) {
    let grew = false;
    for (const t of list) {
      for (const key of ["name", "worker"]) {
        if (t[key] && !known[key].has(t[key])) {
          known[key].add(t[key]);
          grew = true;
        }
      }
      const old = tasks.get(t.id);
      if (old && (old.version ?? 0) > (t.version ?? 0)) continue;
      if (matches(t, filters)) {
        if (!old) total += 1;
        tasks.set(t.id, t);
      } else if (old) {
        tasks.delete(t.id);
        total = Math.max(0, total - 1);
      }
    }
    if (grew) drawFilters();
    draw();
  }

  form.addEventListener("change", (event) => {
    const name = event.target.dataset.filter;
    if (!name) return;
    filters[name] = event.target.value;
    changed();
  });
  ctx.setTitle("Tasks");
  main.append(
    h("div", { class: "page-head" }, h("h1", null, "Tasks"), shown,
      h("button", {
        type: "button", class: "small push-right", id: "rate-limit",
        onclick: () => rateLimit({
          task: filters.name,
          names: [...known.name].sort(),
          workers: [...new Set([...ctx.workers.map((w) => w.hostname), ...known.worker])].sort(),
        }),
      }, "Rate limit…")),
    form, h("div", { class: "scroll" }, grid), status);
  drawFilters();
  load();
  return {
    update(message) {
      if (Array.isArray(message.tasks) && message.tasks.length) onStream(message.tasks);
    },
    unmount() {
      alive = false;
    },
  };
}
