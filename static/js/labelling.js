// Keyboard labelling: one key per cell on the grid, and hotkeys on the single-cell page.
// Grid keys: class hotkey = label (Shift = "not sure"), Enter = confirm the model's call (never on a
// cell the model referred: its suggestion is only a best guess, and the server refuses it too),
// arrows/Tab = move, Space = select, Ctrl+A = select all, Esc = clear, Backspace = undo, ? = arm "not sure",
// + = the large view (static/js/cellzoom.js). Labels are saved through the REST API, one request at a time, in the order typed.
// Exam mode (a proficiency test: the grid's data-mode="exam"): the same keys; each answer goes to the test's answer
// API with the seconds the cell has been in focus so far; there is no model call to confirm and no bulk request.
(function () {
  "use strict";

  function isTyping(target) {
    return target && (target.tagName === "INPUT" && target.type !== "checkbox" && target.type !== "radio"
      || target.tagName === "TEXTAREA" || target.tagName === "SELECT" || target.isContentEditable);
  }

  const postJSON = window.LP.postJSON;  // static/js/http.js

  // --- The grid ------------------------------------------------------------------------------
  // One grid's state: its cells, the page's widgets, the selection, the undo stack and the chain
  // of saves (one request at a time, in the order typed). Every grid function below takes it as `g`.
  function gridState(grid) {
    const classes = JSON.parse(document.getElementById("label-classes").textContent);
    const byKey = {};
    const byCode = {};
    classes.forEach((c) => { byCode[c.code] = c; if (c.hotkey) byKey[c.hotkey.toLowerCase()] = c; });
    const remaining = document.getElementById("remaining");
    return {
      grid: grid,
      byKey: byKey,
      byCode: byCode,
      cells: Array.from(grid.querySelectorAll(".lcell")),
      status: document.getElementById("save-status"),
      unsureBox: document.getElementById("unsure-armed"),
      remaining: remaining,
      doneCount: document.getElementById("done-count"),
      zoom: null,  // the large view (static/js/cellzoom.js), made in setupGrid
      startRemaining: parseInt(remaining.dataset.count, 10) || 0,
      undoStack: [],
      selected: new Set(),
      focusIndex: 0,
      chain: Promise.resolve(),
      pending: 0,
      exam: grid.dataset.mode === "exam",
      focusedAt: performance.now(),
    };
  }

  function setStatus(g, text, isError) {
    g.status.textContent = text;
    g.status.classList.toggle("error", !!isError);
  }

  function updateCounts(g) {
    const done = g.cells.filter((c) => c.dataset.mine).length;
    g.doneCount.textContent = done;
    const left = Math.max(0, g.startRemaining - done);
    g.remaining.textContent = left;
    const tab = document.querySelector(".queue-tabs a.current .queue-count");
    if (tab) tab.textContent = left;
  }

  // A call the model accepted (confirm it with Enter); a referred cell's suggestion is only a best guess.
  function modelCall(cell) { return cell.dataset.referred ? "" : (cell.dataset.suggest || ""); }

  function render(g, cell) {
    const mine = cell.dataset.mine;
    const out = cell.querySelector(".mine");
    const call = modelCall(cell);
    cell.classList.toggle("labelled", !!mine);
    cell.classList.toggle("unsure", !!mine && cell.dataset.unsure === "1");
    cell.classList.toggle("confirmed", !!mine && mine === call);
    cell.classList.toggle("changed", !!mine && !!call && mine !== call);
    out.dataset.class = mine || "";
    if (!mine) { out.textContent = ""; return; }
    let text = (g.byCode[mine] ? g.byCode[mine].name : mine);
    if (cell.dataset.unsure === "1") text += " · not sure";
    if (call) text += mine === call ? " ✓" : " (changed)";
    out.textContent = text;
  }

  function cellState(cell) { return cell.dataset.mine ? { code: cell.dataset.mine, unsure: cell.dataset.unsure === "1" } : null; }
  function setCellState(g, cell, st) {
    cell.dataset.mine = st ? st.code : "";
    cell.dataset.unsure = st && st.unsure ? "1" : "";
    render(g, cell);
  }

  function imageId(cell) { return parseInt(cell.dataset.image, 10); }

  // Queue one save behind the others; the page shows "saving…" until the last one settles.
  function enqueue(g, work) {
    g.pending += 1;
    g.grid.dataset.pending = g.pending;
    setStatus(g, "saving…");
    g.chain = g.chain.then(work).then(
      () => { if (g.pending === 1) setStatus(g, "saved"); },
      (err) => setStatus(g, "Not saved: " + err.message, true)
    ).finally(() => {
      g.pending -= 1;
      g.grid.dataset.pending = g.pending;
      updateCounts(g);
    });
  }

  // --- Focus and selection (the large view is static/js/cellzoom.js) ---
  // Exam mode: the seconds a cell has been in focus (kept on the cell, counted on while it has the focus).
  function secondsOn(g, cell) {
    const kept = parseFloat(cell.dataset.seconds || "0") || 0;
    return g.cells[g.focusIndex] === cell ? kept + (performance.now() - g.focusedAt) / 1000 : kept;
  }

  function focusCell(g, index) {
    if (index < 0 || index >= g.cells.length) return false;
    const left = g.cells[g.focusIndex];
    if (g.exam && index !== g.focusIndex) {
      left.dataset.seconds = secondsOn(g, left).toFixed(2);
      g.focusedAt = performance.now();
    }
    left.tabIndex = -1;
    g.focusIndex = index;
    const cell = g.cells[g.focusIndex];
    cell.tabIndex = 0;
    cell.focus({ preventScroll: false });
    if (g.zoom.isOpen()) g.zoom.open(cell);
    return true;
  }

  function focusNext(g) { focusCell(g, Math.min(g.focusIndex + 1, g.cells.length - 1)); }

  function columns(g) {
    const top = g.cells[0].offsetTop;
    let n = 0;
    while (n < g.cells.length && g.cells[n].offsetTop === top) n += 1;
    return Math.max(1, n);
  }

  function toggleSelect(g, cell, on) {
    const value = on === undefined ? !g.selected.has(cell) : on;
    if (value) g.selected.add(cell); else g.selected.delete(cell);
    cell.classList.toggle("selected", value);
  }

  function clearSelection(g) { Array.from(g.selected).forEach((c) => toggleSelect(g, c, false)); }

  function targets(g) {
    return g.selected.size ? g.cells.filter((c) => g.selected.has(c)) : [g.cells[g.focusIndex]];
  }

  // --- Saving, labelling, undo ---
  // One cell goes to the label API (a failure puts it back); several go to the bulk API, which
  // answers with the cells it refused: those are put back and named in the error.
  // Exam mode: one answer per cell, each with its time; a failure puts that cell back.
  async function postAnswers(g, previous, code, unsure) {
    for (const p of previous) {
      try {
        await postJSON(g.grid.dataset.api, {
          image: imageId(p.cell), cell_class: code, unsure: unsure, seconds: Math.round(secondsOn(g, p.cell) * 100) / 100,
        });
      } catch (err) {
        setCellState(g, p.cell, p.prev);
        throw err;
      }
    }
  }

  async function postLabels(g, previous, code, unsure) {
    if (g.exam) return postAnswers(g, previous, code, unsure);
    const cellList = previous.map((p) => p.cell);
    try {
      if (cellList.length === 1) {
        const cell = cellList[0];
        await postJSON(g.grid.dataset.api, {
          image: imageId(cell), cell_class: code, unsure: unsure,
          model_version: cell.dataset.modelVersion ? parseInt(cell.dataset.modelVersion, 10) : null,
        });
      } else {
        const result = await postJSON(g.grid.dataset.bulkApi, {
          images: cellList.map(imageId), cell_class: code, unsure: unsure,
        });
        if (result.refused && result.refused.length) {
          result.refused.forEach((r) => {
            const entry = previous.find((p) => p.cell.dataset.image === String(r.image));
            if (entry) setCellState(g, entry.cell, entry.prev);
          });
          throw new Error(result.refused.map((r) => "cell " + r.image + ": " + r.reason).join("; "));
        }
      }
    } catch (err) {
      if (cellList.length === 1) previous.forEach((p) => setCellState(g, p.cell, p.prev));
      throw err;
    }
  }

  function save(g, cellList, code, unsure) {
    const previous = cellList.map((c) => ({ cell: c, prev: cellState(c) }));
    g.undoStack.push(previous);
    cellList.forEach((c) => setCellState(g, c, { code: code, unsure: unsure }));
    updateCounts(g);
    enqueue(g, () => postLabels(g, previous, code, unsure));
  }

  function label(g, code, unsure) {
    const list = targets(g);
    const wasSelection = g.selected.size > 0;
    save(g, list, code, unsure);
    if (g.unsureBox.checked) g.unsureBox.checked = false;
    if (wasSelection) {
      clearSelection(g);
    } else {
      focusNext(g);
    }
  }

  // Why Enter does nothing on a referred cell, naming the key of the model's best guess.
  function referredMessage(g, cell) {
    const guess = g.byCode[cell.dataset.suggest];
    const key = guess && guess.hotkey ? " (" + guess.hotkey + " for " + guess.name + ")" : "";
    return "Cell " + cell.dataset.image + ": the model referred it" +
      (cell.dataset.reason ? " (" + cell.dataset.reason + ")" : "") +
      "; its best guess is not a call to confirm. Press its class key" + key + ".";
  }

  // Enter: each target cell with a call the model accepted is labelled with it, through the API's
  // "confirm the model's call" (the server looks the call up and refuses a referred cell).
  function confirmModelCall(g) {
    if (g.exam) { setStatus(g, "A test shows no model call: press the cell's class key.", true); return; }
    const all = targets(g);
    const list = all.filter((c) => modelCall(c));
    const referred = all.filter((c) => c.dataset.referred);
    if (!list.length) {
      setStatus(g, referred.length ? referredMessage(g, referred[0]) : "No model call on this cell: press a class key.", true);
      return;
    }
    const unsure = g.unsureBox.checked;
    list.forEach((c) => {
      const previous = [{ cell: c, prev: cellState(c) }];
      g.undoStack.push(previous);
      setCellState(g, c, { code: c.dataset.suggest, unsure: unsure });
      enqueue(g, () => postJSON(g.grid.dataset.api, {
        image: imageId(c), confirm_model_call: true, unsure: unsure,
        model_version: c.dataset.modelVersion ? parseInt(c.dataset.modelVersion, 10) : null,
      }).catch((err) => { setCellState(g, c, previous[0].prev); throw err; }));
    });
    updateCounts(g);
    if (referred.length) {
      const note = referred.length + " referred cell(s) left unlabelled: each needs its class key.";
      g.chain = g.chain.then(() => setStatus(g, note, true));
    }
    if (g.unsureBox.checked) g.unsureBox.checked = false;
    if (g.selected.size) clearSelection(g); else focusNext(g);
  }

  // Put one cell back to its state before the last save, on the page and on the server.
  function undoCell(g, cell, prev) {
    const now = cellState(cell);
    setCellState(g, cell, prev);
    enqueue(g, async () => {
      try {
        if (g.exam) {
          await postAnswers(g, [{ cell: cell, prev: now }], prev ? prev.code : null, prev ? prev.unsure : false);
        } else if (prev) {
          await postJSON(g.grid.dataset.api, { image: imageId(cell), cell_class: prev.code, unsure: prev.unsure });
        } else {
          await postJSON(g.grid.dataset.withdrawApi, { image: imageId(cell) });
        }
      } catch (err) {
        setCellState(g, cell, now);
        throw err;
      }
    });
  }

  function undo(g) {
    const entry = g.undoStack.pop();
    if (!entry) { setStatus(g, "Nothing to undo."); return; }
    entry.forEach(({ cell, prev }) => undoCell(g, cell, prev));
    updateCounts(g);
    focusCell(g, g.cells.indexOf(entry[0].cell));
  }

  // --- Mouse and keyboard ---
  function bindCells(g) {
    g.cells.forEach((cell, i) => {
      render(g, cell);
      cell.addEventListener("click", (e) => {
        if (e.target.closest("a")) return;
        if (e.ctrlKey || e.metaKey || e.shiftKey) toggleSelect(g, cell);
        focusCell(g, i);
      });
      cell.addEventListener("dblclick", (e) => { if (!e.target.closest("a")) { focusCell(g, i); g.zoom.open(cell); } });
    });
  }

  // Left/right move the focus; with Shift they also select the cell left and the cell reached.
  function stepFocus(g, e, delta) {
    e.preventDefault();
    if (e.shiftKey) toggleSelect(g, g.cells[g.focusIndex], true);
    focusCell(g, g.focusIndex + delta);
    if (e.shiftKey) toggleSelect(g, g.cells[g.focusIndex], true);
  }

  // The keys that are not class hotkeys.
  function onCommandKey(g, e) {
    switch (e.key) {
      case "ArrowRight": stepFocus(g, e, 1); break;
      case "ArrowLeft": stepFocus(g, e, -1); break;
      case "ArrowDown": e.preventDefault(); focusCell(g, Math.min(g.cells.length - 1, g.focusIndex + columns(g))); break;
      case "ArrowUp": e.preventDefault(); focusCell(g, Math.max(0, g.focusIndex - columns(g))); break;
      case "Tab":
        if (e.target.closest && e.target.closest(".lcell") && focusCell(g, g.focusIndex + (e.shiftKey ? -1 : 1))) e.preventDefault();
        break;
      case "Home": e.preventDefault(); focusCell(g, 0); break;
      case "End": e.preventDefault(); focusCell(g, g.cells.length - 1); break;
      case " ": e.preventDefault(); toggleSelect(g, g.cells[g.focusIndex]); break;
      case "Escape": clearSelection(g); break;
      case "Enter": e.preventDefault(); confirmModelCall(g); break;
      case "Backspace": e.preventDefault(); undo(g); break;
      case "?": e.preventDefault(); g.unsureBox.checked = !g.unsureBox.checked; break;
      case "+": case "=": e.preventDefault(); g.zoom.toggle(g.cells[g.focusIndex]); break;
      default: break;
    }
  }

  function onGridKey(g, e) {
    if (isTyping(e.target) || e.altKey || !g.cells.length) return;
    const key = e.key;
    if ((e.ctrlKey || e.metaKey) && key.toLowerCase() === "a") {
      e.preventDefault(); g.cells.forEach((c) => toggleSelect(g, c, true)); return;
    }
    if (e.ctrlKey || e.metaKey) return;
    const cls = g.byKey[key.toLowerCase()];
    if (cls && key.length === 1) {
      e.preventDefault();
      label(g, cls.code, e.shiftKey || g.unsureBox.checked);
      return;
    }
    onCommandKey(g, e);
  }

  function setupGrid(grid) {
    const g = gridState(grid);
    g.zoom = window.LP.cellZoom({ cells: () => g.cells, onMove: (cell) => focusCell(g, g.cells.indexOf(cell)) });
    bindCells(g);
    document.addEventListener("keydown", (e) => onGridKey(g, e));
    window.addEventListener("beforeunload", (e) => { if (g.pending > 0) { e.preventDefault(); e.returnValue = ""; } });
    // A test resumed starts at its first cell without an answer.
    const start = g.exam ? Math.max(0, g.cells.findIndex((c) => !c.dataset.mine)) : 0;
    if (g.cells.length) { g.cells[0].tabIndex = -1; g.focusIndex = start; g.cells[start].tabIndex = 0; g.cells[start].focus(); }
    updateCounts(g);
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
