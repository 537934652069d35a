// Slide verification: select a cell, press a class key (or drag it onto a class group) and the
// count updates live from the server's JSON answer. The forms under each cell work without it.
// "+" or a cell's ⤢ button opens the large view (static/js/cellzoom.js), on a signed slide too.
(function () {
  "use strict";
  const root = document.getElementById("verify-groups");
  if (!root) return;
  let selected = null;
  const locked = root.dataset.locked === "true";

  function cells() { return Array.from(root.querySelectorAll(".slide-cell")); }
  function select(cell) {
    if (selected) selected.classList.remove("selected");
    selected = cell;
    if (cell) { cell.classList.add("selected"); cell.focus({ preventScroll: false }); }
  }
  const zoom = LP.cellZoom({ cells: cells, onMove: select });
  function focusedCell() {
    return (document.activeElement && document.activeElement.closest && document.activeElement.closest(".slide-cell")) || selected;
  }
  root.addEventListener("click", (e) => {
    const button = e.target.closest(".zoom-open");
    if (!button) return;
    const cell = button.closest(".slide-cell");
    select(cell);
    zoom.open(cell);
  });
  document.addEventListener("keydown", (e) => {
    if ((e.key !== "+" && e.key !== "=") || e.ctrlKey || e.metaKey || e.altKey) return;
    if (e.target.closest && e.target.closest("select, input, textarea")) return;
    const cell = focusedCell();
    if (!cell) return;
    e.preventDefault();
    select(cell);
    zoom.open(cell);
  });
  if (locked) return;

  const keys = {};
  const names = {};  // class code -> [name, key], for the referred-cell hint
  document.querySelectorAll(".class-group").forEach((g) => {
    const kbd = g.querySelector("h2 kbd");
    if (kbd) keys[kbd.textContent.trim().toLowerCase()] = g.dataset.class;
    names[g.dataset.class] = [g.querySelector("h2").firstChild.textContent.trim(), kbd ? kbd.textContent.trim() : ""];
  });
  function groupFor(target) {
    return document.getElementById("group-" + target);
  }
  function refreshCounts() {
    document.querySelectorAll(".class-group").forEach((g) => {
      g.querySelector(".group-count").textContent = g.querySelectorAll(".slide-cell").length;
    });
  }
  function showError(message) {
    let box = document.getElementById("verify-error");
    if (!box) {
      box = document.createElement("p");
      box.id = "verify-error";
      box.className = "error";
      root.parentNode.insertBefore(box, root);
    }
    box.textContent = message;
  }

  // The reasons a signature needs a justification follow the count (the server checks again).
  function showSignWarnings(warnings) {
    const box = document.getElementById("sign-warnings");
    if (!box) return;
    const list = document.getElementById("sign-warning-list");
    list.replaceChildren(...warnings.map((w) => { const li = document.createElement("li"); li.textContent = w; return li; }));
    box.hidden = warnings.length === 0;
    document.getElementById("sign-reason").required = warnings.length > 0;
  }

  function reclassify(cell, target) {
    const data = new FormData();
    data.append("target", target);
    cell.classList.add("busy");
    return fetch(cell.dataset.url, {
      method: "POST", body: data, credentials: "same-origin",
      headers: { "X-CSRFToken": LP.csrfToken(), "Accept": "application/json" },
    }).then((r) => r.json().then((body) => ({ ok: r.ok, body: body }))).then(({ ok, body }) => {
      cell.classList.remove("busy");
      if (!ok) { showError(body.error || "The change was refused."); return; }
      const box = document.getElementById("verify-error");
      if (box) box.textContent = "";
      const dest = groupFor(body.cell.status === "not_counted" ? "not_counted" : body.cell.class);
      if (dest) dest.querySelector(".cell-grid").appendChild(cell);
      const select = cell.querySelector("select");
      if (select) select.value = body.cell.status === "not_counted" ? "not_counted" : body.cell.class;
      refreshCounts();
      if (body.html) document.getElementById("differential-body").innerHTML = body.html;
      const checklist = document.getElementById("sign-checklist");
      if (checklist && body.sign_checklist_html !== undefined) checklist.outerHTML = body.sign_checklist_html;
      const sign = document.getElementById("sign-button");
      if (sign && body.differential) sign.disabled = body.differential.unresolved > 0;
      if (body.differential) showSignWarnings(body.differential.sign_warnings || []);
      cell.dataset.finalClass = body.cell.class;
      const mark = cell.querySelector(".verified-mark");
      if (mark && body.cell.verified) {
        mark.textContent = "✓ verified" + (body.cell.verified_by ? " by " + body.cell.verified_by : "");
        mark.hidden = false;
        cell.classList.add("verified");
      }
    }).catch(() => { cell.classList.remove("busy"); showError("The server could not be reached."); });
  }

  root.addEventListener("click", (e) => {
    const cell = e.target.closest(".slide-cell");
    if (cell && !e.target.closest("form, .zoom-open")) select(cell);
  });
  document.addEventListener("keydown", (e) => {
    if (!selected || e.target.closest("select, input, textarea, button, a") || e.ctrlKey || e.metaKey || e.altKey) return;
    const list = cells();
    const i = list.indexOf(selected);
    let target = null;
    if (e.key === "ArrowRight" || e.key === "ArrowDown") { select(list[Math.min(list.length - 1, i + 1)]); e.preventDefault(); return; }
    if (e.key === "ArrowLeft" || e.key === "ArrowUp") { select(list[Math.max(0, i - 1)]); e.preventDefault(); return; }
    if (e.key === "Delete" || e.key === "Backspace") target = "not_counted";
    else if (e.key === "Enter") {
      if (selected.closest("#group-not_counted")) target = "counted";
      else if (selected.closest(".class-group.unidentified")) {
        // The model referred this cell: its best guess is not a call; only a class key classifies it.
        e.preventDefault();
        const guess = names[selected.dataset.bestGuess];
        showError("The model referred this cell: its best guess is not a call to confirm. Press a class key" +
          (guess && guess[1] ? " (" + guess[1] + " for " + guess[0] + ")" : "") + ".");
        return;
      } else target = "confirm";
    }
    else target = keys[e.key.toLowerCase()] || null;
    if (!target) return;
    e.preventDefault();
    const cell = selected;
    const next = list[i + 1] || null;
    reclassify(cell, target).then(() => {
      if (!next) return;
      select(next);
      if (zoom.isOpen()) zoom.open(next);  // the large view follows the keys
    });
  });

  root.addEventListener("dragstart", (e) => {
    const cell = e.target.closest(".slide-cell");
    if (!cell) return;
    e.dataTransfer.setData("text/plain", cell.id);
    e.dataTransfer.effectAllowed = "move";
  });
  document.querySelectorAll(".class-group").forEach((g) => {
    g.addEventListener("dragover", (e) => { e.preventDefault(); g.classList.add("drop"); });
    g.addEventListener("dragleave", () => g.classList.remove("drop"));
    g.addEventListener("drop", (e) => {
      e.preventDefault();
      g.classList.remove("drop");
      const cell = document.getElementById(e.dataTransfer.getData("text/plain"));
      if (!cell || g.dataset.class === "unidentified") return;
      reclassify(cell, g.dataset.class);
    });
  });
  // The forms keep working; with JavaScript they answer in place.
  root.querySelectorAll(".cell-form").forEach((form) => {
    form.addEventListener("submit", (e) => {
      e.preventDefault();
      reclassify(form.closest(".slide-cell"), form.querySelector("select").value);
    });
  });
})();

// Red-cell morphology: signing with grades changed but not saved would sign without them; say so
// and stop instead (without JavaScript the two forms stay separate, as the page says).
(function () {
  "use strict";
  const form = document.getElementById("red-cell-form");
  const sign = document.getElementById("sign-form");
  if (!form || !sign) return;
  const snapshot = () => JSON.stringify(Array.from(new FormData(form).entries()));
  const initial = snapshot();
  sign.addEventListener("submit", (e) => {
    if (snapshot() === initial) return;
    e.preventDefault();
    let note = document.getElementById("red-cells-unsaved");
    if (!note) {
      note = document.createElement("p");
      note.id = "red-cells-unsaved";
      note.className = "warn";
      note.setAttribute("role", "alert");
      note.textContent = "The red-cell grades have changed and are not saved: save them (or undo the changes) before signing.";
      sign.insertBefore(note, document.getElementById("sign-button"));
    }
  });
})();
