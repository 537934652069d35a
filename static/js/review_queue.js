// The adjudication page with the labelling grid's keys: on a focused row a class hotkey chooses its
// class (nothing is preselected) and Enter decides it; up/down move between rows; "+" or a click on
// the cell opens the large view (static/js/cellzoom.js). The forms work without it.
(function () {
  "use strict";
  const table = document.getElementById("review-table");
  if (!table) return;
  const rows = Array.from(table.querySelectorAll("tr.review-row"));
  if (!rows.length) return;

  function isTyping(target) {
    return target && (target.tagName === "INPUT" || target.tagName === "TEXTAREA" || target.tagName === "SELECT" || target.isContentEditable);
  }
  function focusRow(row) { if (row) row.focus({ preventScroll: false }); }
  function currentRow() { return document.activeElement && document.activeElement.closest && document.activeElement.closest("tr.review-row"); }
  function say(row, text) { row.querySelector(".decide-status").textContent = text; }

  const zoom = LP.cellZoom({ cells: () => rows, onMove: focusRow });

  // A class key chooses the row's class; the row says which.
  function choose(row, key) {
    const select = row.querySelector("select[name=cell_class]");
    const option = Array.from(select.options).find((o) => o.dataset.hotkey && o.dataset.hotkey.toLowerCase() === key.toLowerCase());
    if (!option) return false;
    select.value = option.value;
    say(row, "");
    return true;
  }

  // Enter decides the row, never with an empty choice (the server refuses one too).
  function decide(row) {
    const form = row.querySelector("form.decide");
    if (!form.querySelector("select[name=cell_class]").value) {
      say(row, "Choose the final class first: press its key or pick it in the list.");
      return;
    }
    form.requestSubmit();
  }

  table.addEventListener("click", (e) => {
    const thumb = e.target.closest("a.thumb");
    if (!thumb) return;
    e.preventDefault();
    const row = thumb.closest("tr.review-row");
    focusRow(row);
    zoom.open(row);
  });

  document.addEventListener("keydown", (e) => {
    if (isTyping(e.target) || e.ctrlKey || e.metaKey || e.altKey) return;
    const row = currentRow();
    if (!row) return;
    if (e.key === "Enter" && e.target === row) { e.preventDefault(); decide(row); return; }
    if (e.key === "+" || e.key === "=") { e.preventDefault(); zoom.open(row); return; }
    if (e.key === "ArrowDown") { e.preventDefault(); focusRow(rows[rows.indexOf(row) + 1]); return; }
    if (e.key === "ArrowUp") { e.preventDefault(); focusRow(rows[rows.indexOf(row) - 1]); return; }
    if (e.key.length === 1 && e.target === row && choose(row, e.key)) e.preventDefault();
  });

  focusRow(rows[0]);
})();
