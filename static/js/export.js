// Export pages: the zip downloads as a file (the page stays); meanwhile the page polls how far
// the server has written it and shows a progress bar. Without this script the form still works.
(function () {
  "use strict";
  const form = document.getElementById("export-form");
  const box = document.getElementById("export-progress");
  if (!form || !box) return;
  const bar = document.getElementById("export-progress-bar");
  const text = document.getElementById("export-progress-text");
  const token = form.querySelector("input[name=progress_token]");
  let timer = null;

  function randomToken() {
    const bytes = new Uint8Array(12);
    crypto.getRandomValues(bytes);
    return Array.from(bytes, (b) => b.toString(16).padStart(2, "0")).join("");
  }

  function poll(value) {
    fetch(box.dataset.progressUrl + "?token=" + value, { headers: { Accept: "application/json" } })
      .then((r) => (r.ok ? r.json() : null))
      .then((state) => {
        if (!state) return;
        if (state.total) {
          bar.max = state.total;
          bar.value = state.done;
          text.textContent = state.finished
            ? "Done: " + state.total + " " + state.unit + " written. The download finishes in your browser."
            : state.done + " of " + state.total + " " + state.unit + " written…";
        }
        if (state.finished) { clearInterval(timer); timer = null; }
      })
      .catch(() => {});
  }

  form.addEventListener("submit", (event) => {
    if (event.submitter && event.submitter.name === "count") return;
    const value = randomToken();
    token.value = value;
    bar.removeAttribute("value");
    text.textContent = "Preparing the archive…";
    box.classList.remove("hidden");
    if (timer) clearInterval(timer);
    timer = setInterval(() => poll(value), 500);
  });
})();
