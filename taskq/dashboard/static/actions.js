// Every action the dashboard can take, each behind a confirmation dialog. Each resolves
// to the server's answer, or null when the user cancels.

import { post } from "./api.js";
import { confirmAction } from "./dialog.js";

/**
 * Read the workers' replies in an action's answer ([{hostname: {ok|error: text}}]): when
 * every one refused, or `expected` named a worker and none answered, the action failed
 * (the dialog shows why); some refusals are added to the message.
 */
function checkReplies(answer, expected = null) {
  const replies = Array.isArray(answer?.replies) ? answer.replies : [];
  const refusals = [];
  for (const reply of replies) {
    for (const [host, body] of Object.entries(reply || {})) {
      if (body && typeof body === "object" && body.error) refusals.push(`${host}: ${body.error}`);
    }
  }
  if (replies.length && refusals.length === replies.length) throw new Error(refusals.join("\n"));
  if (expected && !replies.length) throw new Error(`No answer from ${expected}: is it online?`);
  if (refusals.length) return { ...answer, message: `${answer.message} (refused by ${refusals.join("; ")})` };
  return answer;
}

const SIGNALS = ["SIGTERM", "SIGKILL", "SIGINT", "SIGQUIT", "SIGUSR1", "SIGHUP"];
const enc = encodeURIComponent;

/** Revoke one task; optionally terminate it if it is running. */
export function revokeTask(task) {
  return confirmAction({
    title: "Revoke task",
    message: `Revoke ${task.name || "task"} ${task.id}? If it has not started, it will not run.`,
    fields: [
      { name: "terminate", type: "checkbox", label: "Terminate it if it is running (signals its process)", value: task.state === "STARTED" },
      { name: "signal", type: "select", label: "Signal", value: "SIGTERM", options: SIGNALS.map((s) => [s, s]) },
    ],
    confirm: "Revoke",
    danger: true,
    run: async ({ terminate, signal }) =>
      checkReplies(await post(`/api/tasks/${enc(task.id)}/revoke`, { terminate, signal })),
  });
}

/** Set or remove a task type's rate limit, on every worker or one. */
export function rateLimit({ task = "", names = [], workers = [] } = {}) {
  const taskField = {
    name: "task", label: "Task name", value: task, required: true, placeholder: "proj.tasks.add", suggestions: names,
  };
  return confirmAction({
    title: "Rate limit",
    message: "Limit how often workers start this task type.",
    fields: [
      taskField,
      { name: "rate", label: "Rate", placeholder: "10/m", help: "Per second, minute or hour: 5/s, 10/m, 100/h. Empty or 0 removes the limit." },
      {
        name: "worker", type: "select", label: "Workers", value: "",
        options: [["", "All workers"], ...workers.map((w) => [w, w])],
      },
    ],
    confirm: "Apply",
    run: async ({ task: name, rate, worker }) =>
      checkReplies(await post("/api/rate-limit", { task: name, rate, worker: worker || null }), worker || null),
  });
}

/** Grow (delta > 0) or shrink (delta < 0) a worker's pool. */
export function resizePool(hostname, delta) {
  const grow = delta > 0;
  return confirmAction({
    title: grow ? "Grow the pool" : "Shrink the pool",
    message: `${grow ? "Add" : "Remove"} pool processes ${grow ? "to" : "from"} ${hostname}.`,
    fields: [{ name: "n", type: "number", label: "Processes", value: Math.abs(delta), min: 1, max: 64, step: 1, required: true }],
    confirm: grow ? "Grow" : "Shrink",
    run: async ({ n }) => {
      const count = Number.parseInt(n, 10);
      if (!(count > 0)) throw new Error("Give a number of processes, 1 or more.");
      return checkReplies(await post(`/api/workers/${enc(hostname)}/pool`, { delta: grow ? count : -count }), hostname);
    },
  });
}

/** Ask a worker to shut down (warm: it finishes its running tasks first). */
export function shutdownWorker(hostname) {
  return confirmAction({
    title: "Shut down worker",
    message: `Shut down ${hostname}? It finishes the tasks it is running, then exits; nothing restarts it from here.`,
    confirm: "Shut down",
    danger: true,
    run: () => post(`/api/workers/${enc(hostname)}/shutdown`, {}),
  });
}

/** Requeue some dead letters (ids), or every one (ids null). */
export function requeueDead(ids, what) {
  return confirmAction({
    title: "Requeue dead letters",
    message: ids === null
      ? "Send every dead letter back to its queue, with a fresh delivery count?"
      : `Send ${what || ids.join(", ")} back to its queue, with a fresh delivery count?`,
    confirm: "Requeue",
    run: () => post("/api/dead/requeue", { ids }),
  });
}

/** Delete every dead letter for good. */
export function purgeDead(queue) {
  return confirmAction({
    title: "Purge dead letters",
    message: `Delete every message in ${queue || "the dead-letter queue"}? This cannot be undone.`,
    confirm: "Purge",
    danger: true,
    run: () => post("/api/dead/purge", {}),
  });
}
