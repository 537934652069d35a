// The idle warning: the server logs a session out after the lab's idle timeout (accounts.middleware);
// this shows a warning before it, with "Stay signed in" (a POST: activity), and opens the login page at
// the end. A request that saves something (fetch, not GET) is activity too and restarts the count.
(function () {
  "use strict";
  const body = document.body;
  const timeoutS = Number(body.dataset.idleTimeout || 0);
  const warningS = Number(body.dataset.idleWarning || 0);
  if (!timeoutS) return;
  let last = Date.now();
  let banner = null;

  function restart() {
    last = Date.now();
    if (banner) { banner.remove(); banner = null; }
  }

  const originalFetch = window.fetch;
  window.fetch = function (input, init) {
    const method = ((init && init.method) || (input && input.method) || "GET").toUpperCase();
    const result = originalFetch.apply(this, arguments);
    if (method !== "GET" && method !== "HEAD") result.then(function (r) { if (r.ok) restart(); });
    return result;
  };

  function stay() {
    const token = (document.cookie.match(/(?:^|; )csrftoken=([^;]*)/) || [])[1] || "";
    originalFetch(body.dataset.idleKeepalive, {method: "POST", headers: {"X-CSRFToken": decodeURIComponent(token)},
      credentials: "same-origin"}).then(function (r) { if (r.ok) restart(); else window.location.reload(); });
  }

  function tick() {
    const left = timeoutS - (Date.now() - last) / 1000;
    if (left <= -2) { window.location.reload(); return; }  // the server's count started first
    if (left <= warningS) {
      if (!banner) {
        banner = document.createElement("div");
        banner.id = "idle-warning";
        banner.className = "warn";
        banner.setAttribute("role", "alertdialog");
        const text = document.createElement("span");
        const button = document.createElement("button");
        button.type = "button";
        button.id = "idle-stay";
        button.textContent = "Stay signed in";
        button.addEventListener("click", stay);
        banner.append(text, " ", button);
        document.body.prepend(banner);
      }
      banner.firstChild.textContent = "You will be logged out in " + Math.ceil(left) + " s for inactivity.";
    }
  }
  setInterval(tick, 1000);
})();
