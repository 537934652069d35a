// The page scripts' one helper for requests to the portal: the CSRF token and posting JSON.
// Loaded by base.html before every page's own script; the page scripts call LP.csrfToken() and
// LP.postJSON(url, body).
window.LP = window.LP || {};
(function (LP) {
  "use strict";

  // Django's CSRF token, from any form of the page (base.html's logout form has one on every page).
  LP.csrfToken = function () {
    const field = document.querySelector("input[name=csrfmiddlewaretoken]");
    return field ? field.value : "";
  };

  // POST ``body`` as JSON; resolves to the JSON answer, rejects with the server's message.
  LP.postJSON = async function (url, body) {
    const response = await fetch(url, {
      method: "POST",
      credentials: "same-origin",
      headers: { "Content-Type": "application/json", "Accept": "application/json", "X-CSRFToken": LP.csrfToken() },
      body: JSON.stringify(body),
    });
    let data = {};
    try { data = await response.json(); } catch (err) { data = {}; }
    if (!response.ok) {
      const detail = data.detail || Object.values(data).flat().join(" ") || ("HTTP " + response.status);
      throw new Error(detail);
    }
    return data;
  };
})(window.LP);
