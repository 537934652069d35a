// The large view of a cell, shared by the labelling grid, the slide verification screen and the
// adjudication page: the image at its native resolution (whole-number enlargement only when it is
// tiny, never a blur), the model's call and its referral reason in full, previous/next within the
// page's cells (arrow keys or buttons), Escape or the close button closes, and focus returns to the
// cell shown last. Loaded by base.html after http.js; a page calls
//   const zoom = LP.cellZoom({ cells: () => [...elements], onMove: (cell) => {...} });
// and then zoom.open(cell) / zoom.close() / zoom.toggle(cell) / zoom.isOpen().
// What a cell shows comes from its attributes, written by the server, which leaves the call out where
// the reader may not see it (blind reading): data-file (the full image), aria-label (its name),
// data-zoom-call and data-zoom-reason. A cell marked "blind" shows nothing of the model whatever it carries.
window.LP = window.LP || {};
(function (LP) {
  "use strict";

  const SMALL = 240;  // a cell image narrower than this is enlarged by a whole factor

  function describe(cell) {
    const blind = cell.classList.contains("blind");
    return {
      src: cell.dataset.file,
      title: cell.getAttribute("aria-label") || cell.id,
      call: blind ? "" : (cell.dataset.zoomCall || ""),
      reason: blind ? "" : (cell.dataset.zoomReason || ""),
    };
  }

  LP.cellZoom = function (options) {
    const root = document.getElementById("cell-zoom");
    if (!root) throw new Error("cellzoom.js: the page has no #cell-zoom (templates/includes/cell_zoom.html)");
    const img = root.querySelector(".zoom-img");
    const part = (name) => root.querySelector(".zoom-" + name);
    const onMove = options.onMove || function () {};
    let current = null;

    function isOpen() { return !root.classList.contains("hidden"); }

    function fit() {
      const w = img.naturalWidth, h = img.naturalHeight;
      if (!w) return;
      const factor = w < SMALL ? Math.ceil(SMALL / w) : 1;
      img.style.width = (w * factor) + "px";
      img.style.height = (h * factor) + "px";
      img.classList.toggle("enlarged", factor > 1);
      part("size").textContent = w + " × " + h + " px" + (factor > 1 ? ", shown ×" + factor : ", native resolution");
    }
    img.addEventListener("load", fit);

    function show(cell) {
      const cells = options.cells();
      const d = describe(cell);
      current = cell;
      part("size").textContent = "";
      img.style.width = ""; img.style.height = "";
      img.alt = d.title;
      if (img.getAttribute("src") !== d.src) img.src = d.src; else fit();
      part("title").textContent = d.title;
      part("call").textContent = d.call;
      part("call").hidden = !d.call;
      part("reason").textContent = d.reason ? "referred: " + d.reason : "";
      part("reason").hidden = !d.reason;
      const i = cells.indexOf(cell);
      part("position").textContent = (i + 1) + " of " + cells.length;
      part("prev").disabled = i <= 0;
      part("next").disabled = i >= cells.length - 1;
      root.classList.remove("hidden");
      root.dataset.cell = cell.id || cell.dataset.image || "";
    }

    function open(cell) { if (cell) show(cell); }

    function close() {
      if (!isOpen()) return;
      root.classList.add("hidden");
      if (current) current.focus({ preventScroll: false });
    }

    function toggle(cell) { if (isOpen()) close(); else open(cell); }

    function step(delta) {
      const cells = options.cells();
      const next = cells[cells.indexOf(current) + delta];
      if (!next) return;
      show(next);
      onMove(next);
    }

    part("prev").addEventListener("click", () => step(-1));
    part("next").addEventListener("click", () => step(1));
    part("close").addEventListener("click", close);
    root.addEventListener("click", (e) => { if (e.target === root) close(); });
    // While open the view takes the arrows and Escape before the page; other keys (a class key)
    // reach the page, which labels the cell shown and may move the view on with open().
    document.addEventListener("keydown", (e) => {
      if (!isOpen() || e.ctrlKey || e.metaKey || e.altKey) return;
      let handled = true;
      if (e.key === "ArrowRight" || e.key === "ArrowDown") step(1);
      else if (e.key === "ArrowLeft" || e.key === "ArrowUp") step(-1);
      else if (e.key === "Escape" || e.key === "+" || e.key === "=") close();
      else handled = false;
      if (handled) { e.preventDefault(); e.stopImmediatePropagation(); }
    }, true);

    return { open: open, close: close, toggle: toggle, isOpen: isOpen, current: () => current };
  };
})(window.LP);
