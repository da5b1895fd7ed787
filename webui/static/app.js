// shapefarm: the few behaviours htmx attributes cannot express (no inline scripts: CSP).
const KEPT_PROMPT = "shapefarm:kept-prompt";

function isGenerateForm(elt) {
  return elt instanceof HTMLFormElement && elt.classList.contains("generate");
}

// The generate form's refusals (422: bad input or a limit, 401: logged out elsewhere,
// 403: an expired form) carry their message as an out-of-band swap into #submit-error:
// let htmx swap them instead of dropping 4xx answers.
document.addEventListener("htmx:beforeSwap", (event) => {
  const status = event.detail.xhr.status;
  if (isGenerateForm(event.detail.requestConfig.elt) && [401, 403, 422].includes(status)) {
    event.detail.shouldSwap = true;
    event.detail.isError = false;
  }
});

// An error beside a field (#mesh-error, swapped in out of band) marks its field
// aria-invalid, named by its data-field; no error, no mark.
function markInvalidFields() {
  const form = document.querySelector("form.generate");
  if (!form) return;
  form.querySelectorAll("[aria-invalid]").forEach((el) => el.removeAttribute("aria-invalid"));
  form.querySelectorAll(".field-error[data-field]").forEach((p) => {
    const field = form.elements.namedItem(p.dataset.field);
    if (p.textContent.trim() && field instanceof Element) field.setAttribute("aria-invalid", "true");
  });
}
document.addEventListener("htmx:afterSettle", markInvalidFields);

document.addEventListener("htmx:afterRequest", (event) => {
  const form = event.detail.elt;
  if (!isGenerateForm(form)) return;
  const status = event.detail.xhr.status;
  if (status >= 200 && status < 300) {
    // Queued: a fresh form. Anything else keeps what the user typed.
    form.reset();
    for (const id of ["submit-error", "image-error"]) {
      const box = document.getElementById(id);
      if (box) box.textContent = "";
    }
    // Errors shown beside fields (the mesh options) go too.
    form.querySelectorAll(".field-error").forEach((p) => {
      p.textContent = "";
      p.removeAttribute("data-field");
    });
    form.querySelectorAll("[aria-invalid]").forEach((el) => el.removeAttribute("aria-invalid"));
  } else if (status === 413) {
    // Over the upload limit: refused before the server read it; say so by the field.
    const box = document.getElementById("image-error");
    const input = form.querySelector("input[name=image]");
    if (box && input) {
      const p = document.createElement("p");
      p.className = "error";
      p.textContent = input.dataset.tooLarge || "";
      box.replaceChildren(p);
    }
  } else if (status === 401) {
    // Logged out in another tab: the prompt waits for the login in this browser tab.
    const prompt = form.querySelector("textarea[name=prompt]");
    if (prompt && prompt.value) sessionStorage.setItem(KEPT_PROMPT, prompt.value);
  }
});

// Back on the generate page after logging in again: put the kept prompt back.
document.addEventListener("DOMContentLoaded", () => {
  const kept = sessionStorage.getItem(KEPT_PROMPT);
  const prompt = document.querySelector("form.generate textarea[name=prompt]");
  if (kept && prompt) {
    if (!prompt.value) prompt.value = kept;
    sessionStorage.removeItem(KEPT_PROMPT);
  }
});

// Destructive forms ask first: <form data-confirm="Delete this model for good?">.
document.addEventListener("submit", (event) => {
  const form = event.target;
  if (form instanceof HTMLFormElement && form.dataset.confirm && !window.confirm(form.dataset.confirm)) {
    event.preventDefault();
  }
});

// A page showing a one-time secret came from a POST; make a reload a harmless GET
// instead of re-sending the form (which would enroll another agent or key).
document.addEventListener("DOMContentLoaded", () => {
  const secret = document.querySelector("[data-once-url]");
  if (secret) history.replaceState(null, "", secret.dataset.onceUrl);
});

// Shap-E's text encoder (CLIP) understands English: a prompt with letters but none of
// them Latin shows the hint (its text is in the page, in the UI's language).
function updatePromptHint(prompt) {
  const hint = document.getElementById("prompt-hint");
  if (!hint) return;
  const text = prompt.value;
  hint.hidden = !(/\p{L}/u.test(text) && !/[A-Za-z]/.test(text));
}

document.addEventListener("input", (event) => {
  const prompt = event.target;
  if (prompt instanceof HTMLTextAreaElement && prompt.name === "prompt") updatePromptHint(prompt);
});

document.addEventListener("DOMContentLoaded", () => {
  const prompt = document.querySelector("form.generate textarea[name=prompt]");
  if (prompt) updatePromptHint(prompt);
});

// Times: the server writes UTC (<time datetime="…Z" title="… UTC" data-local>); show
// them in the viewer's own time zone and language, the UTC value staying on hover.
function localiseTimes(root) {
  const times = [...root.querySelectorAll("time[data-local]")];
  if (root instanceof Element && root.matches("time[data-local]")) times.push(root);
  if (!times.length) return;
  const format = new Intl.DateTimeFormat(document.documentElement.lang || undefined, {
    dateStyle: "medium",
    timeStyle: "short",
  });
  for (const time of times) {
    const moment = new Date(time.dateTime);
    if (!Number.isNaN(moment.getTime())) time.textContent = format.format(moment);
  }
}

document.addEventListener("DOMContentLoaded", () => localiseTimes(document));
// Content htmx swaps in (search results, live lists, SSE updates).
document.addEventListener("htmx:load", (event) => localiseTimes(event.detail.elt));

// Share box: <button data-copy="ID" data-copied="Link copied"> copies the field ID.
document.addEventListener("click", async (event) => {
  const button = event.target instanceof Element ? event.target.closest("button[data-copy]") : null;
  if (!button) return;
  const field = document.getElementById(button.dataset.copy);
  if (!field) return;
  field.select();
  let copied = false;
  try {
    await navigator.clipboard.writeText(field.value);
    copied = true;
  } catch {
    copied = document.execCommand("copy"); // plain-HTTP pages have no clipboard API
  }
  const status = button.closest(".share")?.querySelector(".copy-status");
  if (status && copied) status.textContent = button.dataset.copied || "";
});

// Generate page: an example prompt fills the textarea.
document.addEventListener("click", (event) => {
  const example = event.target instanceof Element ? event.target.closest("button.example") : null;
  const prompt = document.querySelector("form.generate textarea[name=prompt]");
  if (!example || !prompt) return;
  prompt.value = example.dataset.prompt || example.textContent.trim();
  prompt.focus();
});

// History: "Delete selected" is usable once something is selected; the live list
// re-renders itself (SSE), so the selection is carried over each swap.
function updateSelection(root) {
  for (const form of root.querySelectorAll("form.bulk-delete")) {
    const count = form.querySelectorAll("input.select-job:checked").length;
    const button = form.querySelector("[data-needs-selection]");
    if (button) button.disabled = count === 0;
    const label = form.querySelector(".selection-count");
    if (label) label.textContent = count ? `${label.dataset.prefix || ""} ${count}` : "";
  }
}

let keptSelection = null;
document.addEventListener("htmx:beforeSwap", (event) => {
  if (event.detail.target?.id !== "history-results") return;
  keptSelection = new Set(
    [...document.querySelectorAll("#history-results input.select-job:checked")].map((box) => box.value),
  );
});
document.addEventListener("htmx:afterSettle", () => {
  if (keptSelection) {
    for (const box of document.querySelectorAll("#history-results input.select-job")) {
      if (keptSelection.has(box.value)) box.checked = true;
    }
    keptSelection = null;
  }
  updateSelection(document);
});
document.addEventListener("change", (event) => {
  if (event.target instanceof Element && event.target.matches("input.select-job")) updateSelection(document);
});
document.addEventListener("DOMContentLoaded", () => updateSelection(document));

// Share box without a configured public URL: the server writes paths (it never echoes
// the Host header into links); complete them from this page's own address.
document.addEventListener("DOMContentLoaded", () => {
  for (const field of document.querySelectorAll("[data-from-origin]")) {
    field.value = field.value.replace(/(^|src=")\//, `$1${window.location.origin}/`);
  }
});

// Opt-in browser notification when the job on this page ends while the tab is in the
// background. The permission is asked only when the box is ticked; the choice is kept
// per browser (localStorage) and applies to every job page.
const NOTIFY_KEY = "shapefarm:notify-jobs";
const NOTIFIED_STATES = ["succeeded", "failed"];
const FINAL_STATES = [...NOTIFIED_STATES, "cancelled"];

function jobState(root) {
  const status = root.querySelector(".status");
  if (!status) return null;
  const found = [...status.classList].find((name) => name.startsWith("state-"));
  return found ? found.slice("state-".length) : null;
}

function notifyWanted() {
  return localStorage.getItem(NOTIFY_KEY) === "on" && Notification.permission === "granted";
}

document.addEventListener("DOMContentLoaded", () => {
  const box = document.querySelector("[data-notify-job]");
  const live = document.getElementById("job-live");
  if (!box || !live || !("Notification" in window)) return;
  const input = box.querySelector("input[type=checkbox]");
  const denied = box.querySelector("[data-notify-denied]");
  const sync = () => {
    input.checked = notifyWanted();
    denied.hidden = Notification.permission !== "denied";
  };
  box.hidden = false;
  sync();
  input.addEventListener("change", async () => {
    if (!input.checked) {
      localStorage.removeItem(NOTIFY_KEY);
    } else {
      let permission = Notification.permission;
      if (permission === "default") permission = await Notification.requestPermission();
      if (permission === "granted") localStorage.setItem(NOTIFY_KEY, "on");
    }
    sync();
  });

  let last = jobState(live);
  new MutationObserver(() => {
    const state = jobState(live);
    if (!state || state === last) return;
    const wasLive = last !== null && !FINAL_STATES.includes(last);
    last = state;
    if (!wasLive || !NOTIFIED_STATES.includes(state)) return;
    if (document.visibilityState !== "hidden" || !notifyWanted()) return;
    const title = state === "succeeded" ? box.dataset.notifyReady : box.dataset.notifyFailed;
    const note = new Notification(title, {
      body: box.dataset.notifyBody,
      tag: `shapefarm-job-${box.dataset.notifyJob}`,
    });
    note.addEventListener("click", () => {
      window.focus();
      note.close();
    });
  }).observe(live, { childList: true, subtree: true, attributes: true, attributeFilter: ["class"] });
});
