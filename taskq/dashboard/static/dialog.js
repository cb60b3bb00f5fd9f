// Confirmation before every action (one <dialog> in index.html), and short notices.

import { fill, h } from "./dom.js";

const $ = (id) => document.getElementById(id);

function fieldInput(field) {
  const id = `field-${field.name}`;
  if (field.type === "checkbox") {
    return h("label", { class: "check" },
      h("input", { type: "checkbox", id, name: field.name, checked: Boolean(field.value) }),
      " ", field.label);
  }
  let input;
  if (field.type === "select") {
    input = h("select", { id, name: field.name },
      field.options.map(([value, label]) => h("option", { value, selected: value === field.value }, label)));
  } else {
    input = h("input", {
      id, name: field.name, type: field.type || "text", value: field.value ?? "",
      placeholder: field.placeholder, required: field.required, autocomplete: "off",
      min: field.min, max: field.max, step: field.step,
      list: field.suggestions?.length ? `${id}-list` : null,
    });
  }
  const suggestions = field.suggestions?.length
    ? h("datalist", { id: `${id}-list` }, field.suggestions.map((v) => h("option", { value: v })))
    : null;
  return h("label", { class: "field", for: id }, h("span", null, field.label), input, suggestions,
    field.help ? h("small", null, field.help) : null);
}

function readFields(form, fields) {
  const values = {};
  for (const field of fields) {
    const input = form.elements.namedItem(field.name);
    values[field.name] = field.type === "checkbox" ? input.checked : input.value.trim();
  }
  return values;
}

/**
 * Ask before acting. `run(values)` does the action and returns the server's answer; the
 * dialog stays open with the server's error text if it throws.
 * Resolves to run's answer, or null when the user cancels.
 */
export function confirmAction({ title, message, fields = [], confirm = "Confirm", danger = false, run }) {
  const dialog = $("confirm");
  const form = $("confirm-form");
  const ok = $("confirm-ok");
  const cancel = $("confirm-cancel");
  const error = $("confirm-error");
  fill($("confirm-title"), title);
  fill($("confirm-body"),
    message ? h("p", null, message) : null,
    fields.map(fieldInput));
  ok.textContent = confirm;
  ok.className = danger ? "danger" : "primary";
  error.hidden = true;
  error.textContent = "";

  return new Promise((resolve) => {
    const finish = (answer) => {
      form.removeEventListener("submit", submit);
      cancel.removeEventListener("click", dismiss);
      dialog.removeEventListener("cancel", dismiss);
      if (dialog.open) dialog.close();
      resolve(answer);
    };
    const dismiss = (event) => {
      event.preventDefault();
      if (!ok.disabled) finish(null);
    };
    const submit = async (event) => {
      event.preventDefault();
      ok.disabled = cancel.disabled = true;
      const label = ok.textContent;
      ok.textContent = "Working…";
      error.hidden = true;
      try {
        const answer = await run(readFields(form, fields));
        finish(answer);
        toast(answer?.message || "Done", "ok");
      } catch (err) {
        error.textContent = err.message || String(err);
        error.hidden = false;
      } finally {
        ok.disabled = cancel.disabled = false;
        ok.textContent = label;
      }
    };
    form.addEventListener("submit", submit);
    cancel.addEventListener("click", dismiss);
    dialog.addEventListener("cancel", dismiss);
    dialog.showModal();
    (form.querySelector("input, select") || cancel).focus();
  });
}

let toastTimer = null;

/** A short notice at the bottom of the page ("ok" or "error"). */
export function toast(text, kind = "ok") {
  const box = $("toast");
  box.textContent = text;
  box.className = `toast toast-${kind} shown`;
  clearTimeout(toastTimer);
  toastTimer = setTimeout(() => box.classList.remove("shown"), kind === "error" ? 10000 : 5000);
}
