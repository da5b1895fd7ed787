// shapefarm: the few behaviours htmx attributes cannot express (no inline scripts: CSP).
document.addEventListener("htmx:afterRequest", (event) => {
  const form = event.detail.elt;
  if (form instanceof HTMLFormElement && form.classList.contains("generate") && event.detail.successful) {
    form.reset();
    const box = document.getElementById("submit-error");
    if (box) box.textContent = "";
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
