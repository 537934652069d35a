// Keyboard labelling: one key per cell on the grid, and hotkeys on the single-cell page.
// Grid keys: class hotkey = label (Shift = "not sure"), Enter = confirm the model's suggestion,
// arrows/Tab = move, Space = select, Ctrl+A = select all, Esc = clear, Backspace = undo, ? = arm "not sure",
// + = zoom. Labels are saved through the REST API, one request at a time, in the order typed.
(function () {
  "use strict";

  function isTyping(target) {
    return target && (target.tagName === "INPUT" && target.type !== "checkbox" && target.type !== "radio"
      || target.tagName === "TEXTAREA" || target.tagName === "SELECT" || target.isContentEditable);
  }

  const postJSON = window.LP.postJSON;  // static/js/http.js

  // --- The grid ------------------------------------------------------------------------------
  function setupGrid(grid) {
    const classes = JSON.parse(document.getElementById("label-classes").textContent);
    const byKey = {};
    const byCode = {};
    classes.forEach((c) => { byCode[c.code] = c; if (c.hotkey) byKey[c.hotkey.toLowerCase()] = c; });
    const cells = Array.from(grid.querySelectorAll(".lcell"));
    const status = document.getElementById("save-status");
    const unsureBox = document.getElementById("unsure-armed");
    const remaining = document.getElementById("remaining");
    const doneCount = document.getElementById("done-count");
    const zoom = document.getElementById("zoom");
    const startRemaining = parseInt(remaining.dataset.count, 10) || 0;
    const undoStack = [];
    const selected = new Set();
    let focusIndex = 0;
    let chain = Promise.resolve();
    let pending = 0;

    function setStatus(text, isError) {
      status.textContent = text;
      status.classList.toggle("error", !!isError);
    }

    function updateCounts() {
      const done = cells.filter((c) => c.dataset.mine).length;
      doneCount.textContent = done;
      const left = Math.max(0, startRemaining - done);
      remaining.textContent = left;
      const tab = document.querySelector(".queue-tabs a.current .queue-count");
      if (tab) tab.textContent = left;
    }

    function render(cell) {
      const mine = cell.dataset.mine;
      const out = cell.querySelector(".mine");
      cell.classList.toggle("labelled", !!mine);
      cell.classList.toggle("unsure", !!mine && cell.dataset.unsure === "1");
      cell.classList.toggle("confirmed", !!mine && mine === cell.dataset.suggest);
      cell.classList.toggle("changed", !!mine && !!cell.dataset.suggest && mine !== cell.dataset.suggest);
      out.dataset.class = mine || "";
      if (!mine) { out.textContent = ""; return; }
      let text = (byCode[mine] ? byCode[mine].name : mine);
      if (cell.dataset.unsure === "1") text += " · not sure";
      if (cell.dataset.suggest) text += mine === cell.dataset.suggest ? " ✓" : " (changed)";
      out.textContent = text;
    }

    function state(cell) { return cell.dataset.mine ? { code: cell.dataset.mine, unsure: cell.dataset.unsure === "1" } : null; }
    function setState(cell, st) {
      cell.dataset.mine = st ? st.code : "";
      cell.dataset.unsure = st && st.unsure ? "1" : "";
      render(cell);
    }

    function enqueue(work) {
      pending += 1;
      grid.dataset.pending = pending;
      setStatus("saving…");
      chain = chain.then(work).then(
        () => { if (pending === 1) setStatus("saved"); },
        (err) => setStatus("Not saved: " + err.message, true)
      ).finally(() => {
        pending -= 1;
        grid.dataset.pending = pending;
        updateCounts();
      });
    }

    function focusCell(index) {
      if (index < 0 || index >= cells.length) return false;
      cells[focusIndex].tabIndex = -1;
      focusIndex = index;
      const cell = cells[focusIndex];
      cell.tabIndex = 0;
      cell.focus({ preventScroll: false });
      if (!zoom.classList.contains("hidden")) openZoom();
      return true;
    }

    function columns() {
      const top = cells[0].offsetTop;
      let n = 0;
      while (n < cells.length && cells[n].offsetTop === top) n += 1;
      return Math.max(1, n);
    }

    function toggleSelect(cell, on) {
      const value = on === undefined ? !selected.has(cell) : on;
      if (value) selected.add(cell); else selected.delete(cell);
      cell.classList.toggle("selected", value);
    }

    function clearSelection() { Array.from(selected).forEach((c) => toggleSelect(c, false)); }

    function targets() {
      return selected.size ? cells.filter((c) => selected.has(c)) : [cells[focusIndex]];
    }

    function save(cellList, code, unsure) {
      const previous = cellList.map((c) => ({ cell: c, prev: state(c) }));
      undoStack.push(previous);
      cellList.forEach((c) => setState(c, { code: code, unsure: unsure }));
      updateCounts();
      enqueue(async () => {
        try {
          if (cellList.length === 1) {
            const cell = cellList[0];
            await postJSON(grid.dataset.api, {
              image: parseInt(cell.dataset.image, 10), cell_class: code, unsure: unsure,
              model_version: cell.dataset.modelVersion ? parseInt(cell.dataset.modelVersion, 10) : null,
            });
          } else {
            const result = await postJSON(grid.dataset.bulkApi, {
              images: cellList.map((c) => parseInt(c.dataset.image, 10)), cell_class: code, unsure: unsure,
            });
            if (result.refused && result.refused.length) {
              result.refused.forEach((r) => {
                const entry = previous.find((p) => p.cell.dataset.image === String(r.image));
                if (entry) setState(entry.cell, entry.prev);
              });
              throw new Error(result.refused.map((r) => "cell " + r.image + ": " + r.reason).join("; "));
            }
          }
        } catch (err) {
          if (cellList.length === 1) previous.forEach((p) => setState(p.cell, p.prev));
          throw err;
        }
      });
    }

    function label(code, unsure) {
      const list = targets();
      const wasSelection = selected.size > 0;
      save(list, code, unsure);
      if (unsureBox.checked) unsureBox.checked = false;
      if (wasSelection) {
        clearSelection();
      } else {
        focusCell(Math.min(focusIndex + 1, cells.length - 1));
      }
    }

    function confirmSuggestion() {
      const list = targets().filter((c) => c.dataset.suggest);
      if (!list.length) { setStatus("No model suggestion on this cell: press a class key.", true); return; }
      const unsure = unsureBox.checked;
      const groups = {};
      list.forEach((c) => { (groups[c.dataset.suggest] = groups[c.dataset.suggest] || []).push(c); });
      Object.keys(groups).forEach((code) => {
        groups[code].forEach((c) => save([c], code, unsure));
      });
      if (unsureBox.checked) unsureBox.checked = false;
      if (selected.size) clearSelection(); else focusCell(Math.min(focusIndex + 1, cells.length - 1));
    }

    function undo() {
      const entry = undoStack.pop();
      if (!entry) { setStatus("Nothing to undo."); return; }
      entry.forEach(({ cell, prev }) => {
        const now = state(cell);
        setState(cell, prev);
        enqueue(async () => {
          try {
            if (prev) {
              await postJSON(grid.dataset.api, { image: parseInt(cell.dataset.image, 10), cell_class: prev.code, unsure: prev.unsure });
            } else {
              await postJSON(grid.dataset.withdrawApi, { image: parseInt(cell.dataset.image, 10) });
            }
          } catch (err) {
            setState(cell, now);
            throw err;
          }
        });
      });
      updateCounts();
      focusCell(cells.indexOf(entry[0].cell));
    }

    function openZoom() {
      const cell = cells[focusIndex];
      const img = zoom.querySelector("img");
      img.src = cell.dataset.file;
      zoom.querySelector(".zoom-caption").textContent = cell.getAttribute("aria-label") + " — " +
        (cell.querySelector(".suggest").textContent.trim()) + " (Esc or + closes)";
      zoom.classList.remove("hidden");
    }
    function closeZoom() { zoom.classList.add("hidden"); }

    cells.forEach((cell, i) => {
      render(cell);
      cell.addEventListener("click", (e) => {
        if (e.target.closest("a")) return;
        if (e.ctrlKey || e.metaKey || e.shiftKey) toggleSelect(cell);
        focusCell(i);
      });
      cell.addEventListener("dblclick", (e) => { if (!e.target.closest("a")) { focusCell(i); openZoom(); } });
    });
    zoom.addEventListener("click", closeZoom);

    document.addEventListener("keydown", (e) => {
      if (isTyping(e.target) || e.altKey || !cells.length) return;
      const key = e.key;
      if ((e.ctrlKey || e.metaKey) && key.toLowerCase() === "a") {
        e.preventDefault(); cells.forEach((c) => toggleSelect(c, true)); return;
      }
      if (e.ctrlKey || e.metaKey) return;
      const cls = byKey[key.toLowerCase()];
      if (cls && key.length === 1) {
        e.preventDefault();
        label(cls.code, e.shiftKey || unsureBox.checked);
        return;
      }
      switch (key) {
        case "ArrowRight": e.preventDefault(); if (e.shiftKey) toggleSelect(cells[focusIndex], true); focusCell(focusIndex + 1); if (e.shiftKey) toggleSelect(cells[focusIndex], true); break;
        case "ArrowLeft": e.preventDefault(); if (e.shiftKey) toggleSelect(cells[focusIndex], true); focusCell(focusIndex - 1); if (e.shiftKey) toggleSelect(cells[focusIndex], true); break;
        case "ArrowDown": e.preventDefault(); focusCell(Math.min(cells.length - 1, focusIndex + columns())); break;
        case "ArrowUp": e.preventDefault(); focusCell(Math.max(0, focusIndex - columns())); break;
        case "Tab":
          if (e.target.closest && e.target.closest(".lcell") && focusCell(focusIndex + (e.shiftKey ? -1 : 1))) e.preventDefault();
          break;
        case "Home": e.preventDefault(); focusCell(0); break;
        case "End": e.preventDefault(); focusCell(cells.length - 1); break;
        case " ": e.preventDefault(); toggleSelect(cells[focusIndex]); break;
        case "Escape": clearSelection(); closeZoom(); break;
        case "Enter": e.preventDefault(); confirmSuggestion(); break;
        case "Backspace": e.preventDefault(); undo(); break;
        case "?": e.preventDefault(); unsureBox.checked = !unsureBox.checked; break;
        case "+": case "=": e.preventDefault(); if (zoom.classList.contains("hidden")) openZoom(); else closeZoom(); break;
        default: break;
      }
    });

    window.addEventListener("beforeunload", (e) => { if (pending > 0) { e.preventDefault(); e.returnValue = ""; } });
    if (cells.length) cells[0].focus();
    updateCounts();
  }

  // --- The single-cell page ------------------------------------------------------------------
  function setupSingle(form) {
    const img = document.getElementById("zoom-img");
    let scale = 1;
    function zoomTo(s) { scale = Math.min(8, Math.max(0.5, s)); img.style.transform = "scale(" + scale + ")"; }
    const zin = document.getElementById("zoom-in");
    const zout = document.getElementById("zoom-out");
    const zreset = document.getElementById("zoom-reset");
    if (zin) zin.addEventListener("click", () => zoomTo(scale * 1.5));
    if (zout) zout.addEventListener("click", () => zoomTo(scale / 1.5));
    if (zreset) zreset.addEventListener("click", () => zoomTo(1));
    img.addEventListener("wheel", (e) => { e.preventDefault(); zoomTo(scale * (e.deltaY < 0 ? 1.2 : 1 / 1.2)); }, { passive: false });
    const radios = Array.from(form.querySelectorAll("input[name=cell_class]"));
    const unsure = form.querySelector("input[name=unsure]");
    document.addEventListener("keydown", (e) => {
      if (isTyping(e.target) || e.altKey || e.ctrlKey || e.metaKey) return;
      if (e.key === "?") { e.preventDefault(); unsure.checked = !unsure.checked; return; }
      if (e.key === "+" || e.key === "=") { e.preventDefault(); zoomTo(scale * 1.5); return; }
      if (e.key === "-") { e.preventDefault(); zoomTo(scale / 1.5); return; }
      const radio = radios.find((r) => r.dataset.hotkey && r.dataset.hotkey.toLowerCase() === e.key.toLowerCase());
      if (radio && e.key.length === 1) {
        e.preventDefault();
        radio.checked = true;
        if (e.shiftKey) unsure.checked = true;
        form.submit();
      }
    });
  }

  const grid = document.getElementById("label-grid");
  if (grid) setupGrid(grid);
  const single = document.getElementById("label-form");
  if (single) setupSingle(single);
})();
