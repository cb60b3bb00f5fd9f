// The dashboard's entry point: the router (location.pathname picks the view), the nav
// bar, the overview summary and the live stream that feeds the current view.
//
// A view module exports mount(main, param, ctx) and returns a handle:
//   { update(message) — a stream message arrived; tick() — every few seconds;
//     unmount() — the user went elsewhere }  (each optional)

import { getJSON, LiveStream } from "./api.js";
import { toast } from "./dialog.js";
import { fill, h, refreshAges, setText } from "./dom.js";
import { count } from "./format.js";
import * as chart from "./view-chart.js";
import * as dead from "./view-dead.js";
import * as queues from "./view-queues.js";
import * as tasks from "./view-tasks.js";
import * as task from "./view-task.js";
import * as workers from "./view-workers.js";

const ROUTES = [
  [/^\/(workers\/?)?$/, "workers", workers.mount],
  [/^\/queues\/?$/, "queues", queues.mount],
  [/^\/tasks\/?$/, "tasks", tasks.mount],
  [/^\/tasks\/([^/]+)\/?$/, "tasks", task.mount],
  [/^\/dead\/?$/, "dead", dead.mountList],
  [/^\/dead\/([^/]+)\/?$/, "dead", dead.mountLetter],
  [/^\/chart\/?$/, "chart", chart.mount],
];

const TICK_MS = 5000;

/** What every view may read: the latest overview and worker list, and navigate(). */
const ctx = {
  overview: null,
  workers: [],
  navigate,
  setTitle(text) {
    const app = document.getElementById("app-name").textContent;
    document.title = `${text} · ${app} · taskq`;
  },
};

let current = null; // the mounted view's handle

function route(pathname) {
  for (const [pattern, name, mount] of ROUTES) {
    const match = pattern.exec(pathname);
    if (match) return { name, mount, param: match[1] && name !== "workers" ? decodeURIComponent(match[1]) : null };
  }
  return null;
}

function render() {
  current?.unmount?.();
  current = null;
  const main = document.getElementById("main");
  const found = route(location.pathname);
  for (const a of document.querySelectorAll("#nav a")) {
    if (found && a.dataset.view === found.name) a.setAttribute("aria-current", "page");
    else a.removeAttribute("aria-current");
  }
  if (!found) {
    fill(main, h("h1", null, "Not found"), h("p", { class: "notice notice-info" }, "No such page. ",
      h("a", { href: "/workers", "data-link": true }, "Go to the workers.")));
    return;
  }
  main.replaceChildren();
  current = found.mount(main, found.param, ctx) || {};
}

/** Go to `href` without reloading the page. */
export function navigate(href, { replace = false, keepView = false } = {}) {
  const url = new URL(href, location.href);
  if (url.origin !== location.origin) {
    location.href = url.href;
    return;
  }
  if (keepView) {
    // the view changed its own state (filters): only the address follows
    history.replaceState(null, "", url);
    return;
  }
  if (replace) history.replaceState(null, "", url);
  else if (url.href !== location.href) history.pushState(null, "", url);
  render();
  window.scrollTo(0, 0);
}

function onLinkClick(event) {
  const a = event.target.closest("a[data-link]");
  if (!a || event.defaultPrevented || event.button !== 0) return;
  if (event.metaKey || event.ctrlKey || event.shiftKey || event.altKey) return;
  event.preventDefault();
  navigate(a.getAttribute("href"));
}

// -- the summary in the top bar -------------------------------------------------------

function showOverview(overview) {
  if (!overview) return;
  ctx.overview = overview;
  const { workers: w = {}, tasks: t = {}, events: e = {} } = overview;
  const items = [
    h("span", { class: "sum-item", title: "Workers online / offline" },
      h("b", null, count(w.online ?? 0)), " online",
      w.offline ? [" · ", h("span", { class: "muted" }, `${count(w.offline)} offline`)] : null),
    h("span", { class: "sum-item", title: `Tasks kept in memory (at most ${count(t.max)})` },
      h("b", null, count(t.kept ?? 0)), " tasks"),
  ];
  const failed = t.by_state?.FAILURE;
  if (failed) items.push(h("span", { class: "sum-item sum-bad" }, h("b", null, count(failed)), " failed"));
  fill(document.getElementById("summary"), items);
  const banner = document.getElementById("banner");
  if (e.error) {
    banner.textContent = `Worker events are not arriving: ${e.error}`;
    banner.hidden = false;
  } else if (e.connected === false && (e.received ?? 0) === 0) {
    banner.textContent = "Waiting for worker events (start the workers with -E).";
    banner.hidden = false;
  } else {
    banner.hidden = true;
  }
}

function showConnection(state) {
  const el = document.getElementById("conn");
  el.dataset.state = state;
  setText(el, state);
}

function onUpdate(message) {
  if (message.overview) showOverview(message.overview);
  if (Array.isArray(message.workers)) ctx.workers = message.workers;
  current?.update?.(message);
}

async function boot() {
  document.addEventListener("click", onLinkClick);
  window.addEventListener("popstate", render);
  // A restarted server has a new CSRF token and a new state: load the page afresh.
  const stream = new LiveStream(onUpdate, showConnection, () => location.reload());
  // The overview first, then the view, then the stream from the overview's version: what
  // the view reads is at least that recent, and every change after it comes by the stream.
  let version = 0;
  try {
    const overview = await getJSON("/api/overview");
    showOverview(overview);
    version = overview.version ?? 0;
  } catch (err) {
    toast(err.message, "error");
  }
  render();
  stream.start(version);
  setInterval(() => {
    refreshAges(document.getElementById("main"));
    current?.tick?.();
  }, TICK_MS);
}

boot();
