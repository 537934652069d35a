// Drag-and-drop upload with a progress bar per file and overall, then a summary.
(function () {
  "use strict";
  const form = document.getElementById("upload-form");
  if (!form) return;
  const input = document.getElementById("upload-files");
  const zone = document.getElementById("dropzone");
  const list = document.getElementById("file-progress");
  const overall = document.getElementById("overall-progress");
  const overallText = document.getElementById("overall-text");
  let chosen = [];

  function show(id) { document.getElementById(id).classList.remove("hidden"); }

  zone.addEventListener("dragover", (e) => { e.preventDefault(); zone.classList.add("over"); });
  zone.addEventListener("dragleave", () => zone.classList.remove("over"));
  zone.addEventListener("drop", (e) => {
    e.preventDefault(); zone.classList.remove("over");
    chosen = Array.from(e.dataTransfer.files);
    zone.firstChild.textContent = chosen.length + " file(s) ready. ";
  });
  input.addEventListener("change", () => { chosen = Array.from(input.files); });

  function sendOne(file, onProgress, onUploaded) {
    return new Promise((resolve) => {
      const data = new FormData();
      data.append("files", file);
      data.append("split", form.querySelector("[name=split]").value);
      data.append("sample_code", form.querySelector("[name=sample_code]").value);
      const source = form.querySelector("[name=acquisition_source]");
      if (source) data.append("acquisition_source", source.value);
      const xhr = new XMLHttpRequest();
      xhr.open("POST", form.action);
      xhr.setRequestHeader("X-CSRFToken", window.LP.csrfToken());  // static/js/http.js
      xhr.setRequestHeader("Accept", "application/json");
      xhr.upload.onprogress = (e) => { if (e.lengthComputable) onProgress(e.loaded / e.total); };
      xhr.upload.onload = () => { if (onUploaded) onUploaded(); };
      xhr.onload = () => {
        let body;
        try { body = JSON.parse(xhr.responseText); } catch (err) { body = { error: "Server answered " + xhr.status }; }
        if (xhr.status >= 400) body = { refused: [{ name: file.name, reason: body.error || ("HTTP " + xhr.status) }] };
        resolve(body);
      };
      xhr.onerror = () => resolve({ refused: [{ name: file.name, reason: "network error" }] });
      xhr.send(data);
    });
  }

  form.addEventListener("submit", async (e) => {
    if (!chosen.length) chosen = Array.from(input.files);
    if (!chosen.length) return; // let the server say what is missing
    e.preventDefault();
    show("progress");
    list.innerHTML = "";
    const bars = chosen.map((f) => {
      const li = document.createElement("li");
      const bar = document.createElement("progress"); bar.max = 100; bar.value = 0;
      const name = document.createElement("span"); name.textContent = f.name;
      const state = document.createElement("span"); state.className = "file-state muted";
      li.append(bar, name, state); list.append(li);
      bar.state = state;
      return bar;
    });
    const total = { stored: [], duplicates: [], refused: [] };
    let done = 0;
    for (let i = 0; i < chosen.length; i++) {
      bars[i].state.textContent = "uploading…";
      const isZip = chosen[i].name.toLowerCase().endsWith(".zip");
      const result = await sendOne(chosen[i], (p) => {
        bars[i].value = p * (isZip ? 90 : 100);
        overall.value = ((done + p * 0.95) / chosen.length) * 100;
      }, () => { bars[i].state.textContent = isZip ? "unpacking and checking every image…" : "checking…"; });
      bars[i].value = 100; done += 1;
      bars[i].state.textContent = (result.stored || []).length + " stored, " + (result.duplicates || []).length +
        " duplicate(s), " + (result.refused || []).length + " refused";
      overall.value = (done / chosen.length) * 100;
      overallText.textContent = done + " / " + chosen.length;
      for (const k of ["stored", "duplicates", "refused"]) (result[k] || []).forEach((r) => total[k].push(r));
    }
    show("summary");
    document.getElementById("summary-counts").textContent =
      total.stored.length + " stored, " + total.duplicates.length + " duplicates, " + total.refused.length + " refused.";
    const body = document.querySelector("#summary-table tbody");
    body.innerHTML = "";
    const row = (name, result, reason, cls) => {
      const tr = document.createElement("tr"); if (cls) tr.className = cls;
      [name, result, reason].forEach((t) => { const td = document.createElement("td"); td.textContent = t; tr.append(td); });
      body.append(tr);
    };
    total.stored.forEach((r) => row(r.name, "stored (image " + r.id + ")", ""));
    total.duplicates.forEach((r) => row(r.name, "duplicate", r.message));  // says the split it stays in
    total.refused.forEach((r) => row(r.name, "refused", r.reason, "refused"));
    chosen = []; input.value = "";
  });
})();
