// A small line chart in inline SVG: time on x, values on y from 0, a line and a dot per
// point for each series, gaps where a value is null. Colours come from style.css
// (.series-NAME), so the chart follows the page's theme.

import { s } from "./dom.js";
import { clock, short } from "./format.js";

const WIDTH = 960;
const HEIGHT = 240;
const M = { top: 12, right: 16, bottom: 26, left: 52 };

/** 1, 2 or 5 times a power of ten, at least max/ticks: a round step for the y axis. */
function niceStep(max, ticks) {
  const raw = max / ticks;
  const power = 10 ** Math.floor(Math.log10(raw));
  const step = [1, 2, 5, 10].map((f) => f * power).find((v) => v >= raw);
  return step;
}

function yAxis(top, y, format) {
  const ticks = [];
  for (let v = 0; v <= top + 1e-9; v += top / 4) {
    ticks.push(s("g", { class: "tick" },
      s("line", { x1: M.left, x2: WIDTH - M.right, y1: y(v), y2: y(v), class: v === 0 ? "axis" : "grid" }),
      s("text", { x: M.left - 6, y: y(v) + 4, "text-anchor": "end" }, format(v))));
  }
  return ticks;
}

function xAxis(t0, t1, x) {
  const span = t1 - t0;
  const every = span > 7200 ? 3600 : span > 1800 ? 600 : span > 600 ? 300 : 60;
  const ticks = [];
  for (let t = Math.ceil(t0 / every) * every; t <= t1; t += every) {
    ticks.push(s("text", { x: x(t), y: HEIGHT - 8, "text-anchor": "middle", class: "tick" }, clock(t).slice(-8, -3)));
  }
  return ticks;
}

/** Consecutive non-null runs of [x, y] pairs, each one a polyline. */
function segments(points) {
  const runs = [];
  let run = [];
  for (const p of points) {
    if (p === null) {
      if (run.length) runs.push(run);
      run = [];
    } else run.push(p);
  }
  if (run.length) runs.push(run);
  return runs;
}

/**
 * series: [{key, label, values: [number|null] (one per time)}]; times: epoch seconds.
 * format(v) labels the y axis and the tooltips.
 */
export function lineChart({ times, series, format = short, unit = "", label = "" }) {
  const t0 = times[0] ?? Date.now() / 1000 - 3600;
  const t1 = Math.max(times[times.length - 1] ?? t0 + 3600, t0 + 60);
  const max = Math.max(0, ...series.flatMap((sr) => sr.values.filter((v) => v !== null)));
  const top = max > 0 ? niceStep(max, 4) * 4 : 1;
  const x = (t) => M.left + ((t - t0) / (t1 - t0)) * (WIDTH - M.left - M.right);
  const y = (v) => HEIGHT - M.bottom - (v / top) * (HEIGHT - M.top - M.bottom);

  const lines = series.map((sr) => {
    const pts = sr.values.map((v, i) => (v === null ? null : [x(times[i]), y(v), v, times[i]]));
    return s("g", { class: `series series-${sr.key}`, "data-series": sr.key },
      segments(pts).map((run) => s("polyline", { points: run.map(([px, py]) => `${px.toFixed(1)},${py.toFixed(1)}`).join(" ") })),
      pts.filter(Boolean).map(([px, py, v, t]) => s("circle", { cx: px.toFixed(1), cy: py.toFixed(1), r: 2.5, "data-value": v, "data-t": t },
        s("title", null, `${clock(t)} · ${sr.label}: ${format(v)}${unit}`))));
  });

  return s("svg", {
    class: "chart", viewBox: `0 0 ${WIDTH} ${HEIGHT}`, role: "img", "aria-label": label,
    preserveAspectRatio: "xMidYMid meet",
  }, s("title", null, label), s("g", { class: "y-axis" }, yAxis(top, y, format)),
  s("g", { class: "x-axis" }, xAxis(t0, t1, x)), lines);
}

/** An HTML legend for the same series (swatches coloured by .series-KEY). */
export function legend(series, h) {
  return h("ul", { class: "legend" }, series.map((sr) =>
    h("li", { class: `series-${sr.key}` }, h("span", { class: "swatch" }), sr.label)));
}
