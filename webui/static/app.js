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
