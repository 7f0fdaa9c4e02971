// Dashboard-wide behaviour: the CSRF header on every htmx request, and errors shown beside
// the control that failed instead of being dropped (htmx ignores 4xx/5xx bodies by default).
(function () {
  "use strict";

  const meta = document.querySelector('meta[name="csrf-token"]');

  document.addEventListener("htmx:configRequest", (event) => {
    if (meta) event.detail.headers[meta.dataset.header] = meta.content;
  });

  function errorSlot(elt) {
    const pointer = elt.closest("[data-error-target]");
    if (pointer) return document.querySelector(pointer.dataset.errorTarget);
    const form = elt.closest("form");
    const slot = form && form.querySelector(".action-error");
    return slot || document.getElementById("global-error");
  }

  function showError(elt, html) {
    const slot = errorSlot(elt);
    if (slot) slot.innerHTML = html;
  }

  document.addEventListener("htmx:beforeSwap", (event) => {
    const status = event.detail.xhr.status;
    if (status < 400) {
      const form = event.detail.elt.closest("form");
      const slot = form && form.querySelector(".action-error");
      if (slot) slot.innerHTML = "";
      return;
    }
    event.detail.shouldSwap = true;
    event.detail.isError = false;
    event.detail.target = errorSlot(event.detail.elt);
    event.detail.swapOverride = "innerHTML";
  });

  document.addEventListener("htmx:sendError", (event) => {
    showError(
      event.detail.elt,
      '<p class="alert alert-error" role="alert">The server could not be reached. ' +
        "Check your connection and try again.</p>"
    );
  });

  document.addEventListener("htmx:afterRequest", (event) => {
    const form = event.detail.elt;
    if (event.detail.successful && form.matches("form[data-reset-on-success]")) {
      form.querySelectorAll("textarea").forEach((field) => {
        field.value = "";
      });
    }
  });
})();
