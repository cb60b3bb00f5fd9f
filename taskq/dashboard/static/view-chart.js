// /chart: the last hour, minute by minute: tasks per second (succeeded, failed) and the
// runtime's median and 99th percentile. Re-read every 15 s, and soon after the
// stream reports a task finished.

import { getJSON } from "./api.js";
import { fill, h, notice } from "./dom.js";
import { count, duration, short } from "./format.js";
import { legend, lineChart } from "./svgchart.js";

const MINUTES = 60;
const REFRESH_MS = 15000;
const SOON_MS = 2000;
const FINISHED = new Set(["SUCCESS", "FAILURE"]);

function throughput(points, step) {
  const series = [
    { key: "succeeded", label: "Succeeded", values: points.map((p) => (p.succeeded ?? 0) / step) },
    { key: "failed", label: "Failed", values: points.map((p) => (p.failed ?? 0) / step) },
  ];
  return h("section", { class: "panel", id: "chart-throughput" },
    h("div", { class: "panel-head" }, h("h2", null, "Tasks per second"), legend(series, h)),
    lineChart({ times: points.map((p) => p.t), series, unit: "/s", label: "Tasks per second, succeeded and failed" }));
}

function runtimes(points) {
  const series = [
    { key: "p50", label: "p50", values: points.map((p) => p.p50 ?? null) },
    { key: "p99", label: "p99", values: points.map((p) => p.p99 ?? null) },
  ];
  return h("section", { class: "panel", id: "chart-runtime" },
    h("div", { class: "panel-head" }, h("h2", null, "Runtime"), legend(series, h)),
    lineChart({ times: points.map((p) => p.t), series, format: seconds, label: "Task runtime, p50 and p99" }));
}

/** Axis and tooltip labels for runtimes: "0", "250 ms", "1.5 s". */
function seconds(v) {
  return v === 0 ? "0" : v < 1 ? `${short(v * 1000)} ms` : `${short(v)} s`;
}

function totals(points) {
  const sum = (key) => points.reduce((n, p) => n + (p[key] ?? 0), 0);
  const last = [...points].reverse().find((p) => p.p50 !== null && p.p50 !== undefined);
  return h("div", { class: "totals" },
    h("div", { class: "total", id: "total-succeeded" }, h("b", null, count(sum("succeeded"))), h("span", null, "succeeded")),
    h("div", { class: "total bad", id: "total-failed" }, h("b", null, count(sum("failed"))), h("span", null, "failed")),
    h("div", { class: "total" }, h("b", null, last ? duration(last.p50) : "—"), h("span", null, "latest p50")),
    h("div", { class: "total" }, h("b", null, last ? duration(last.p99) : "—"), h("span", null, "latest p99")));
}

export function mount(main, _param, ctx) {
  const body = h("div", { id: "chart-body" }, notice("info", "Loading…"));
  let alive = true;

  async function load() {
    try {
      const answer = await getJSON(`/api/chart?minutes=${MINUTES}`);
      if (!alive) return;
      const points = answer.points || [];
      const step = answer.step || 60;
      fill(body, points.length
        ? [totals(points), throughput(points, step), runtimes(points)]
        : notice("empty", "No data for the last hour yet."));
    } catch (err) {
      if (alive) fill(body, notice("error", err.message));
    }
  }

  ctx.setTitle("Chart");
  main.append(h("div", { class: "page-head" }, h("h1", null, "Last hour"),
    h("span", { class: "muted" }, "per minute, from the workers' events")), body);
  load();
  const timer = setInterval(load, REFRESH_MS);
  let soon = null;
  return {
    update(message) {
      // a task finished: re-read shortly (once for a burst of them)
      if (soon !== null || !(message.tasks || []).some((t) => FINISHED.has(t.state))) return;
      soon = setTimeout(() => {
        soon = null;
        if (alive) load();
      }, SOON_MS);
    },
    unmount() {
      alive = false;
      clearInterval(timer);
      clearTimeout(soon);
    },
  };
}
