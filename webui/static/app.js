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

document.addEventListener("htmx:afterRequest", (event) => {
  const form = event.detail.elt;
  if (!isGenerateForm(form)) return;
  const status = event.detail.xhr.status;
  if (status >= 200 && status < 300) {
    // Queued: a fresh form. Anything else keeps what the user typed.
    form.reset();
    const box = document.getElementById("submit-error");
    if (box) box.textContent = "";
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
