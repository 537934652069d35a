// Live progress of a training run: polls the run's small JSON endpoint and updates the bar.
(function () {
  "use strict";

  function pct(x) { return x === null || x === undefined ? "—" : (100 * x).toFixed(1) + "%"; }
  function num(x) { return x === null || x === undefined ? "—" : Number(x).toFixed(3); }

  function set(box, cls, text) {
    var el = box.querySelector(cls);
    if (el) { el.textContent = text; }
  }

  function render(box, s) {
    var bar = box.querySelector(".js-bar");
    if (bar) { bar.value = s.percent; bar.textContent = s.percent + "%"; }
    set(box, ".js-status", s.status + (s.cancel_requested && !s.finished ? " (cancelling…)" : ""));
    set(box, ".js-text", s.text);
    set(box, ".js-featurising", s.total ? s.done + "/" + s.total + (s.backbone ? " (" + s.backbone + ")" : "") : "—");
    set(box, ".js-epoch", s.epoch ? s.epoch + "/" + s.epochs_total + (s.backbone ? " (" + s.backbone + ")" : "") : "—");
    set(box, ".js-loss", num(s.loss));
    set(box, ".js-val", pct(s.val_accuracy));
    set(box, ".js-error", s.error || "");
    box.dataset.stage = s.stage;
    box.dataset.status = s.status;
    if (s.gate) {
      set(box, ".js-gate", "Promotion gate: " + s.gate.label + (s.gate.reasons.length ? " — " + s.gate.reasons.join(" ") : ""));
      var links = box.querySelector(".js-links");
      if (links && s.gate.evaluation_url && !links.querySelector("a")) {
        var a = document.createElement("a");
        a.href = s.gate.evaluation_url;  // the server's URL, not one written here
        a.textContent = "Read the evaluation report";
        a.className = "js-report-link";
        links.appendChild(a);
      }
    }
  }

  // Cancel while the run is queued or running; Retry once it failed or was cancelled; neither after success.
  function showActions(s) {
    var live = s.status === "queued" || s.status === "running";
    var retry = s.status === "failed" || s.status === "cancelled";
    document.querySelectorAll(".js-cancel-form").forEach(function (f) { f.classList.toggle("hidden", !live); });
    document.querySelectorAll(".js-retry-form").forEach(function (f) { f.classList.toggle("hidden", !retry); });
  }

  function poll(box) {
    var url = box.dataset.progressUrl;
    var wasFinished = false;
    function tick() {
      fetch(url, { credentials: "same-origin", headers: { "Accept": "application/json" } })
        .then(function (r) { if (!r.ok) { throw new Error(r.status); } return r.json(); })
        .then(function (s) {
          render(box, s);
          showActions(s);
          if (s.finished) {
            wasFinished = true;
            box.classList.add("finished");
            return;
          }
          window.setTimeout(tick, 1000);
        })
        .catch(function () { if (!wasFinished) { window.setTimeout(tick, 3000); } });
    }
    tick();
  }

  document.addEventListener("DOMContentLoaded", function () {
    document.querySelectorAll(".training-progress[data-progress-url]").forEach(poll);
  });
})();
