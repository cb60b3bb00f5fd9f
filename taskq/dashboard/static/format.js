// Numbers, times and durations as the page shows them.

const pad = (n) => String(n).padStart(2, "0");

/** Epoch seconds -> "14:03:27" today, "2024-05-01 14:03:27" another day, "—" for null. */
export function clock(epoch) {
  if (epoch === null || epoch === undefined) return "—";
  const d = new Date(epoch * 1000);
  const time = `${pad(d.getHours())}:${pad(d.getMinutes())}:${pad(d.getSeconds())}`;
  const today = new Date();
  if (d.toDateString() === today.toDateString()) return time;
  return `${d.getFullYear()}-${pad(d.getMonth() + 1)}-${pad(d.getDate())} ${time}`;
}

/** Epoch seconds -> full local date and time, for tooltips. */
export function fullDate(epoch) {
  return epoch === null || epoch === undefined ? "" : new Date(epoch * 1000).toLocaleString();
}

/** Epoch seconds -> "4 s ago", "3 min ago", "2 h ago". */
export function ago(epoch) {
  if (epoch === null || epoch === undefined) return "—";
  const secs = Math.max(0, Date.now() / 1000 - epoch);
  if (secs < 60) return `${Math.round(secs)} s ago`;
  if (secs < 3600) return `${Math.round(secs / 60)} min ago`;
  if (secs < 86400) return `${Math.round(secs / 3600)} h ago`;
  return `${Math.round(secs / 86400)} d ago`;
}

/** Seconds -> "850 µs", "12.3 ms", "1.24 s", "3 min 4 s". */
export function duration(secs) {
  if (secs === null || secs === undefined) return "—";
  if (secs < 0.001) return `${Math.round(secs * 1e6)} µs`;
  if (secs < 1) return `${(secs * 1000).toPrecision(3)} ms`;
  if (secs < 60) return `${secs.toPrecision(3)} s`;
  const mins = Math.floor(secs / 60);
  return `${mins} min ${Math.round(secs - mins * 60)} s`;
}

/** An integer with thousands separators; "—" for null. */
export function count(n) {
  return n === null || n === undefined ? "—" : Number(n).toLocaleString("en-US");
}

/** A short number for chart axes: 0.5, 12, 1.2k. */
export function short(n) {
  if (n === 0) return "0";
  if (Math.abs(n) >= 1000) return `${(n / 1000).toPrecision(2)}k`;
  if (Math.abs(n) >= 10) return String(Math.round(n));
  return String(Number(n.toPrecision(2)));
}

/** An ISO date string (dead letters carry those) -> local date and time. */
export function isoDate(text) {
  if (!text) return "—";
  const d = new Date(text);
  return Number.isNaN(d.getTime()) ? text : clock(d.getTime() / 1000);
}
