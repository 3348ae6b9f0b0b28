// cmvtrial's only script, hand-written and served from this origin (no third-party code; the CSP
// allows nothing else). Pages work without it; it only makes "live" forms answer as you type.
//
// A form with data-live="#target" is posted (debounced) on every change with the header
// X-Fragment: 1; the server answers with an HTML fragment that replaces #target's content. The
// fragment's root may carry data-errors='{"field": "message"}': each message is shown in the
// element with class field-error and data-for="field" (the one next to that field).
// With data-live-url="/…/check" the live posts go to that address instead and the submit button
// still submits the form as usual (a form that checks as you type and saves on request).
"use strict";

(function () {
  const DELAY_MS = 250;

  function showFieldErrors(form, fragmentRoot) {
    let errors = {};
    const carrier = fragmentRoot.querySelector("[data-errors]");
    if (carrier) {
      try { errors = JSON.parse(carrier.getAttribute("data-errors") || "{}"); } catch (e) { errors = {}; }
    }
    for (const slot of form.querySelectorAll(".field-error[data-for]")) {
      const name = slot.getAttribute("data-for");
      const message = errors[name] || "";
      slot.textContent = message;
      slot.hidden = !message;
      const wrapper = slot.closest(".field");
      if (wrapper) { wrapper.classList.toggle("has-error", Boolean(message)); }
      const control = form.querySelector('[aria-describedby~="' + slot.id + '"]');
      if (control) {
        if (message) { control.setAttribute("aria-invalid", "true"); } else { control.removeAttribute("aria-invalid"); }
      }
    }
  }

  function makeLive(form) {
    const target = document.querySelector(form.getAttribute("data-live"));
    if (!target) { return; }
    const liveUrl = form.getAttribute("data-live-url");
    let timer = null;
    let latest = 0;

    async function update() {
      const mine = ++latest;
      try {
        const response = await fetch(liveUrl || form.action, {
          method: "POST",
          body: new FormData(form),
          headers: { "X-Fragment": "1" },
          credentials: "same-origin",
        });
        const html = await response.text();
        if (mine !== latest) { return; }  // a newer answer is on its way
        target.innerHTML = html;
        showFieldErrors(form, target);
        target.setAttribute("data-updated", String(mine));
      } catch (error) {
        if (mine === latest) {
          target.innerHTML = '<p class="notice error" role="alert">Could not reach the server; your answers are still here.</p>';
        }
      }
    }

    function schedule() {
      window.clearTimeout(timer);
      timer = window.setTimeout(update, DELAY_MS);
    }

    form.addEventListener("input", schedule);
    form.addEventListener("change", schedule);
    if (!liveUrl) {
      form.addEventListener("submit", function (event) {
        event.preventDefault();
        window.clearTimeout(timer);
        update();
      });
    }
  }

  // A second click on a submit button while the first request is on its way sends nothing more
  // (the server refuses a repeated randomization or signature anyway; this spares the message).
  function guardDoubleSubmit(form) {
    form.addEventListener("submit", function (event) {
      if (event.defaultPrevented) { return; }
      if (form.getAttribute("data-submitting") === "1") { event.preventDefault(); return; }
      form.setAttribute("data-submitting", "1");
      window.setTimeout(function () { form.removeAttribute("data-submitting"); }, 5000);
    });
  }

  document.addEventListener("DOMContentLoaded", function () {
    for (const form of document.querySelectorAll("form[data-live]")) { makeLive(form); }
    for (const form of document.querySelectorAll('form[method="post"]')) { guardDoubleSubmit(form); }
  });
})();
