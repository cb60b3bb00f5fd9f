// Talking to the server: JSON reads, CSRF-protected actions, the live stream.

const csrfToken = () => document.querySelector('meta[name="csrf-token"]')?.content || "";

/** The error text of a failed answer: the server's {"error": ...}, else its status line. */
async function failure(response) {
  let text = "";
  try {
    text = await response.text();
    const body = JSON.parse(text);
    if (body && typeof body.error === "string") return body.error;
  } catch {
    // not JSON: fall through to the raw text
  }
  const status = `${response.status} ${response.statusText}`.trim();
  return text && text.length < 300 ? `${status}: ${text}` : status;
}

/** GET a JSON document; throws an Error carrying the server's error text. */
export async function getJSON(path) {
  let response;
  try {
    response = await fetch(path, { headers: { Accept: "application/json" }, credentials: "same-origin" });
  } catch (err) {
    throw new Error(`Cannot reach the dashboard server (${err.message})`);
  }
  if (!response.ok) {
    const error = new Error(await failure(response));
    error.status = response.status;
    throw error;
  }
  return response.json();
}

/** POST an action; resolves to the server's answer, throws with its error text. */
export async function post(path, body = {}) {
  let response;
  try {
    response = await fetch(path, {
      method: "POST",
      credentials: "same-origin",
      headers: {
        "Content-Type": "application/json",
        Accept: "application/json",
        "X-CSRF-Token": csrfToken(),
      },
      body: JSON.stringify(body),
    });
  } catch (err) {
    throw new Error(`Cannot reach the dashboard server (${err.message})`);
  }
  if (!response.ok) throw new Error(await failure(response));
  const answer = await response.json().catch(() => ({}));
  if (answer && answer.ok === false) throw new Error(answer.error || answer.message || "The action failed");
  return answer;
}

/** A query string from an object, leaving out empty values: {a: 1, b: ""} -> "?a=1". */
export function query(params) {
  const search = new URLSearchParams();
  for (const [key, value] of Object.entries(params)) {
    if (value !== null && value !== undefined && value !== "") search.set(key, value);
  }
  const text = search.toString();
  return text ? `?${text}` : "";
}

/**
 * The live stream (/api/stream). EventSource would reconnect by itself, but with the
 * `since` it first had: here each reconnection asks for what changed since the last
 * version seen, after a growing pause (1 s to 15 s).
 *   onUpdate(message)   each `update` event, parsed
 *   onStatus(state)     "connecting" | "live" | "reconnecting"
 *   onRestart()         the server was restarted (its version counter went back)
 */
export class LiveStream {
  constructor(onUpdate, onStatus, onRestart) {
    this.onUpdate = onUpdate;
    this.onStatus = onStatus;
    this.onRestart = onRestart;
    this.version = 0;
    this.source = null;
    this.retry = null;
    this.pause = 1000;
  }

  start(version) {
    if (typeof version === "number") this.version = Math.max(this.version, version);
    this.onStatus("connecting");
    this.open();
  }

  open() {
    this.retry = null;
    const source = new EventSource(`/api/stream?since=${this.version}`);
    this.source = source;
    source.addEventListener("open", () => {
      this.pause = 1000;
      this.onStatus("live");
    });
    source.addEventListener("update", (event) => this.receive(event));
    source.addEventListener("error", () => this.lost(source));
  }

  receive(event) {
    let message;
    try {
      message = JSON.parse(event.data);
    } catch {
      return;
    }
    if (typeof message.version === "number") {
      if (message.version < this.version) {
        // the counter went back: a new server process, with a new state and CSRF token
        this.onRestart();
        return;
      }
      this.version = message.version;
    }
    this.onStatus("live");
    this.onUpdate(message);
  }

  lost(source) {
    if (source !== this.source) return;
    source.close();
    this.source = null;
    this.onStatus("reconnecting");
    if (this.retry === null) {
      this.retry = setTimeout(() => this.open(), this.pause);
      this.pause = Math.min(this.pause * 2, 15000);
    }
  }
}
