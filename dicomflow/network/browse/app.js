// dicomflow's browse page: facets, the study and series list, a slice scroller, the progress
// of a running pull or pipeline. It asks only the server it came from: QIDO-RS for the lists,
// WADO-RS "rendered" for the images, /facets and /progress. No library, no build step.
"use strict";

(() => {
  const TOKEN = "dicomflow.token";
  const PAGE_SIZE = 500; // series per list; the totals say when there are more
  const POLL_MS = 2000; // how often /progress is read
  const STALE_S = 30; // a running task not updated for this long is marked
  const LIST_FIELDS = ["StudyDate", "StudyTime", "StudyDescription", "PatientName", "PatientID",
    "AccessionNumber", "Manufacturer", "BodyPartExamined"];
  const SLICE_FIELDS = ["ImagePositionPatient", "ImageOrientationPatient", "InstanceNumber",
    "NumberOfFrames", "Rows"];
  const $ = (id) => document.getElementById(id);

  // -- the token: given once as ?token=..., kept for this tab, sent as a header -------------
  const search = new URLSearchParams(location.search);
  if (search.has("token")) {
    sessionStorage.setItem(TOKEN, search.get("token"));
    search.delete("token");
    const rest = search.toString();
    history.replaceState(null, "", location.pathname + (rest ? "?" + rest : "") + location.hash);
  }

  class Unauthorized extends Error {}

  async function get(path, accept) {
    const headers = { Accept: accept };
    const token = sessionStorage.getItem(TOKEN);
    if (token) headers.Authorization = "Bearer " + token;
    const response = await fetch(path, { headers });
    if (response.status === 401) {
      $("login").hidden = false;
      throw new Unauthorized(path);
    }
    return response;
  }

  async function getJSON(path, accept = "application/json") {
    const response = await get(path, accept);
    if (response.status === 204) return [];
    if (!response.ok) throw new Error(`${path}: HTTP ${response.status}`);
    return response.json();
  }

  // images come as blobs (an <img src> could not carry the token), a few at a time
  const waiting = [];
  let inFlight = 0;
  function image(path) {
    return new Promise((resolve) => {
      waiting.push({ path, resolve });
      pump();
    });
  }
  function pump() {
    while (inFlight < 4 && waiting.length) {
      const { path, resolve } = waiting.shift();
      inFlight += 1;
      get(path, "image/png")
        .then((r) => (r.ok ? r.blob() : null))
        .then((blob) => resolve(blob ? URL.createObjectURL(blob) : null))
        .catch(() => resolve(null))
        .finally(() => { inFlight -= 1; pump(); });
    }
  }

  // -- DICOM JSON ---------------------------------------------------------------------------
  const TAGS = {
    StudyInstanceUID: "0020000D", SeriesInstanceUID: "0020000E", SOPInstanceUID: "00080018",
    StudyDate: "00080020", StudyTime: "00080030", StudyDescription: "00081030",
    PatientName: "00100010", PatientID: "00100020", AccessionNumber: "00080050",
    Modality: "00080060", SeriesNumber: "00200011", SeriesDescription: "0008103E",
    BodyPartExamined: "00180015", Manufacturer: "00080070",
    NumberOfSeriesRelatedInstances: "00201209", InstanceNumber: "00200013",
    NumberOfFrames: "00280008", Rows: "00280010", ImagePositionPatient: "00200032",
    ImageOrientationPatient: "00200037",
  };
  function values(obj, keyword) {
    const element = obj[TAGS[keyword]];
    return element && element.Value ? element.Value : [];
  }
  function value(obj, keyword) {
    const v = values(obj, keyword)[0];
    if (v && typeof v === "object") return v.Alphabetic || "";
    return v === undefined ? "" : v;
  }
  function isoDate(compact) {
    return compact && compact.length >= 8
      ? `${compact.slice(0, 4)}-${compact.slice(4, 6)}-${compact.slice(6, 8)}` : "";
  }

  function el(tag, props = {}, ...children) {
    const node = document.createElement(tag);
    for (const [k, v] of Object.entries(props)) {
      if (k === "dataset") Object.assign(node.dataset, v);
      else if (k in node) node[k] = v;
      else node.setAttribute(k, v);
    }
    node.append(...children.filter((c) => c !== null && c !== undefined));
    return node;
  }

  // -- the filters --------------------------------------------------------------------------
  const chosen = { Modality: new Set(), BodyPartExamined: new Set(), Manufacturer: new Set() };
  let errorSeries = [];
  let noThumbnail = new Set();

  function queryKeys() {
    const keys = new URLSearchParams();
    for (const [key, set] of Object.entries(chosen)) {
      if (set.size) keys.set(key, [...set].join("\\"));
    }
    const from = $("date-from").value.replaceAll("-", "");
    const to = $("date-to").value.replaceAll("-", "");
    if (from || to) keys.set("StudyDate", `${from}-${to}`);
    return keys;
  }

  function renderFacet(fieldset, counts) {
    const key = fieldset.dataset.key;
    const box = fieldset.querySelector(".values");
    box.replaceChildren();
    const shown = new Set(counts.map((c) => c.value));
    // a chosen value no series has under the other filters stays, with 0, to be unchosen
    const all = counts.concat([...chosen[key]].filter((v) => !shown.has(v))
      .map((v) => ({ value: v, series: 0, studies: 0 })));
    for (const c of all) {
      const none = c.value === null;
      const input = el("input", { type: "checkbox", value: none ? "" : c.value, disabled: none,
        checked: !none && chosen[key].has(c.value) });
      input.addEventListener("change", () => {
        if (input.checked) chosen[key].add(c.value); else chosen[key].delete(c.value);
        refresh();
      });
      box.append(el("label", { className: none ? "none" : "" }, input,
        el("span", {}, none ? "(none)" : c.value),
        el("span", { className: "count", title: `${c.studies} studies` }, String(c.series))));
    }
  }

  function renderFacets(f) {
    for (const fieldset of document.querySelectorAll(".facet")) {
      const name = { Modality: "modality", BodyPartExamined: "body_part",
        Manufacturer: "manufacturer" }[fieldset.dataset.key];
      renderFacet(fieldset, f[name]);
    }
    const d = f.dates;
    $("date-range").textContent = d.first
      ? `${isoDate(d.first)} to ${isoDate(d.last)}` + (d.undated ? `, ${d.undated} series undated` : "")
      : "no study dates";
    $("date-from").min = $("date-to").min = isoDate(d.first);
    $("date-from").max = $("date-to").max = isoDate(d.last);
    $("years").replaceChildren(...d.years.map((y) => el("li", {}, `${y.value}: ${y.series} series`)));
    const e = f.errors;
    errorSeries = e.series;
    $("errors-count").textContent = `${e.instances} instances, ${e.series_count} series`;
    $("error-reasons").replaceChildren(...e.reasons.map((r) => el("li", {}, `${r.instances} x ${r.reason}`)));
    $("unlisted").textContent = e.unlisted
      ? `${e.unlisted} cataloged files could not be read and name no series (not listed):` : "";
    $("unlisted-reasons").replaceChildren(
      ...e.unlisted_reasons.map((r) => el("li", {}, `${r.instances} x ${r.reason}`)));
    noThumbnail = new Set(f.no_thumbnail);
    $("totals").textContent = `${f.studies} studies, ${f.series} series, ${f.instances} instances`;
  }

  // -- the study and series list ------------------------------------------------------------
  let generation = 0;

  async function refresh() {
    const mine = ++generation;
    const keys = queryKeys();
    const facets = await getJSON("/facets?" + keys);
    if (mine !== generation) return;
    renderFacets(facets);
    const list = $("list");
    if ($("errors-only").checked) {
      if (!errorSeries.length) {
        list.replaceChildren(el("p", { className: "empty" }, "No series with errors."));
        list.dataset.ready = String(mine);
        return;
      }
      keys.set("SeriesInstanceUID", errorSeries.join("\\"));
    }
    keys.set("includefield", LIST_FIELDS.join(","));
    keys.set("limit", String(PAGE_SIZE));
    const series = await getJSON("/series?" + keys, "application/dicom+json");
    if (mine !== generation) return;
    renderList(series, facets);
    list.dataset.ready = String(mine);
  }

  function renderList(series, facets) {
    const list = $("list");
    const studies = new Map();
    for (const s of series) {
      const uid = value(s, "StudyInstanceUID");
      if (!studies.has(uid)) studies.set(uid, []);
      studies.get(uid).push(s);
    }
    const errors = new Set(errorSeries);
    const sections = [];
    for (const [uid, items] of studies) {
      const first = items[0];
      const meta = [value(first, "PatientID"), isoDate(value(first, "StudyDate")),
        value(first, "StudyDescription"), value(first, "AccessionNumber")].filter(Boolean);
      items.sort((a, b) => (Number(value(a, "SeriesNumber")) || 0) - (Number(value(b, "SeriesNumber")) || 0));
      const cards = items.map((s) => seriesCard(uid, s, errors));
      sections.push(el("section", { className: "study", dataset: { study: uid } },
        el("h3", {}, value(first, "PatientName") || "(no name)", " ",
          el("span", { className: "meta" }, meta.join(" · "))),
        el("ul", { className: "series-list" }, ...cards)));
    }
    if (!sections.length) sections.push(el("p", { className: "empty" }, "No series match."));
    if (series.length >= PAGE_SIZE && facets.series > series.length) {
      sections.unshift(el("p", { className: "note" },
        `The first ${series.length} of ${facets.series} series: narrow the filters.`));
    }
    list.replaceChildren(...sections);
  }

  function seriesCard(study, s, errors) {
    const uid = value(s, "SeriesInstanceUID");
    const caption = [value(s, "Modality"), value(s, "SeriesNumber") && `#${value(s, "SeriesNumber")}`,
      value(s, "SeriesDescription")].filter(Boolean).join(" ");
    const count = value(s, "NumberOfSeriesRelatedInstances");
    let thumb;
    if (noThumbnail.has(uid)) {
      thumb = el("span", { className: "thumb none" }, "no image");
    } else {
      thumb = el("img", { className: "thumb", alt: caption || "series" });
      image(`/studies/${study}/series/${uid}/thumbnail`).then((url) => {
        if (url) { thumb.src = url; thumb.dataset.loaded = "1"; } else thumb.alt = "no image";
      });
    }
    const button = el("button", { type: "button", title: caption }, thumb,
      el("span", { className: "caption" }, caption || "(no description)"),
      el("span", { className: "caption" }, `${count} instances`));
    button.addEventListener("click", () => { location.hash = `#series/${study}/${uid}`; });
    return el("li", { className: "series" + (errors.has(uid) ? " has-errors" : ""),
      dataset: { series: uid } }, button);
  }

  // -- the series page: one slice at a time, in slice order ---------------------------------
  let slices = [];
  let current = -1;
  const cache = new Map();

  function sliceOrder(instances) {
    const out = [];
    for (const i of instances) {
      if (!values(i, "Rows").length) continue; // no image (SR, presentation state)
      const frames = Number(value(i, "NumberOfFrames")) || 1;
      const pos = values(i, "ImagePositionPatient").map(Number);
      const o = values(i, "ImageOrientationPatient").map(Number);
      let along = null;
      if (pos.length === 3 && o.length === 6) { // along the normal of the image plane
        const n = [o[1] * o[5] - o[2] * o[4], o[2] * o[3] - o[0] * o[5], o[0] * o[4] - o[1] * o[3]];
        along = pos[0] * n[0] + pos[1] * n[1] + pos[2] * n[2];
      }
      for (let f = 1; f <= frames; f++) {
        out.push({ sop: value(i, "SOPInstanceUID"), frame: f, along,
          number: Number(value(i, "InstanceNumber")) || 0 });
      }
    }
    const positioned = out.every((s) => s.along !== null) && new Set(out.map((s) => s.along)).size === out.length;
    out.sort((a, b) => (positioned ? a.along - b.along : a.number - b.number || a.frame - b.frame)
      || a.sop.localeCompare(b.sop));
    return out;
  }

  async function openSeries(study, series) {
    $("list").hidden = true;
    $("facets").hidden = true;
    $("viewer").hidden = false;
    document.body.classList.add("viewing");
    const img = $("slice");
    img.removeAttribute("src");
    delete img.dataset.index;
    $("series-title").textContent = "loading...";
    const fields = SLICE_FIELDS.map((f) => "includefield=" + f).join("&");
    const base = `/studies/${study}/series/${series}`;
    const [info] = await getJSON(`/studies/${study}/series?SeriesInstanceUID=${series}`, "application/dicom+json");
    const instances = await getJSON(`${base}/instances?${fields}`, "application/dicom+json");
    slices = sliceOrder(instances).map((s) => ({ ...s, path: `${base}/instances/${s.sop}/frames/${s.frame}/rendered` }));
    for (const url of cache.values()) URL.revokeObjectURL(url);
    cache.clear();
    $("series-title").textContent = info
      ? [value(info, "Modality"), value(info, "SeriesDescription"), `${slices.length} slices`].filter(Boolean).join(" · ")
      : `${slices.length} slices`;
    const slider = $("slider");
    slider.max = String(Math.max(slices.length - 1, 0));
    current = -1;
    show(Math.floor(slices.length / 2));
  }

  async function show(index) {
    if (!slices.length) { $("slice-label").textContent = "no images in this series"; return; }
    index = Math.max(0, Math.min(slices.length - 1, index));
    if (index === current) return;
    current = index;
    $("slider").value = String(index);
    $("slice-label").textContent = `slice ${index + 1} / ${slices.length}`;
    const s = slices[index];
    let url = cache.get(index);
    if (!url) {
      url = await image(s.path);
      if (url) cache.set(index, url);
    }
    if (index !== current) return; // scrolled on meanwhile
    const img = $("slice");
    if (!url) { img.removeAttribute("src"); img.alt = "this slice could not be shown"; return; }
    img.onload = () => { img.dataset.index = String(index); };
    img.dataset.sop = s.sop;
    img.dataset.frame = String(s.frame);
    img.src = url;
    for (const near of [index + 1, index - 1]) { // the next slices, before they are asked for
      if (near >= 0 && near < slices.length && !cache.has(near)) {
        image(slices[near].path).then((u) => { if (u) cache.set(near, u); });
      }
    }
  }

  function closeSeries() {
    $("viewer").hidden = true;
    $("list").hidden = false;
    $("facets").hidden = false;
    document.body.classList.remove("viewing");
    slices = [];
    current = -1;
  }

  function route() {
    const m = location.hash.match(/^#series\/([0-9.]+)\/([0-9.]+)$/);
    if (m) openSeries(m[1], m[2]).catch(failed); else closeSeries();
  }

  // -- the progress of a running pull or pipeline -------------------------------------------
  function clock(seconds) {
    const s = Math.round(seconds);
    return `${Math.floor(s / 3600)}:${String(Math.floor((s % 3600) / 60)).padStart(2, "0")}:${String(s % 60).padStart(2, "0")}`;
  }

  function renderTask(t) {
    if (t.state === "unreadable") {
      return el("div", { className: "task", dataset: { state: t.state } },
        el("strong", {}, t.where), el("span", { className: "state" }, "progress file unreadable"));
    }
    const count = t.total !== null ? `${t.done}/${t.total}` : String(t.done);
    const parts = [`${count} ${t.unit}`];
    if (t.total) parts[0] += ` (${Math.floor((100 * t.done) / t.total)}%)`;
    if (t.failed) parts.push(`${t.failed} failed`);
    parts.push(`${t.rate.toFixed(1)} ${t.unit}/s`);
    if (t.state === "running" && t.eta !== null) parts.push(`ETA ${clock(t.eta)}`);
    const stale = t.state === "running" && t.age !== null && t.age > STALE_S;
    const bar = el("progress", { max: t.total || 1, value: t.total ? t.done : 0 });
    const node = el("div", { className: "task", dataset: { state: t.state, id: String(t.id) } },
      el("strong", {}, t.where), el("span", { className: "what" }, `(${t.task})`), bar, el("span", { className: "counts" }, parts.join(", ")),
      el("span", { className: "state" }, stale ? `no update for ${clock(t.age)}` : t.state));
    if (stale) node.dataset.stale = "1";
    return node;
  }

  async function poll() {
    try {
      const { tasks } = await getJSON("/progress");
      $("tasks").replaceChildren(...tasks.map(renderTask));
      $("progress").hidden = !tasks.length;
      $("progress").dataset.polled = String(Number($("progress").dataset.polled || 0) + 1);
    } catch (e) {
      if (e instanceof Unauthorized) return; // the form asks for the token
      $("progress").hidden = true;
    }
    setTimeout(poll, POLL_MS);
  }

  // -- wiring -------------------------------------------------------------------------------
  function failed(e) {
    if (e instanceof Unauthorized) return;
    $("totals").textContent = "the server did not answer: " + e.message;
  }

  $("date-from").addEventListener("change", () => refresh().catch(failed));
  $("date-to").addEventListener("change", () => refresh().catch(failed));
  $("errors-only").addEventListener("change", () => refresh().catch(failed));
  $("clear").addEventListener("click", () => {
    for (const set of Object.values(chosen)) set.clear();
    $("date-from").value = $("date-to").value = "";
    $("errors-only").checked = false;
    refresh().catch(failed);
  });
  $("slider").addEventListener("input", (e) => show(Number(e.target.value)));
  $("stage").addEventListener("wheel", (e) => {
    e.preventDefault();
    show(current + Math.sign(e.deltaY));
  }, { passive: false });
  document.addEventListener("keydown", (e) => {
    if ($("viewer").hidden || e.target.tagName === "INPUT") return;
    const step = { ArrowDown: 1, ArrowRight: 1, ArrowUp: -1, ArrowLeft: -1, PageDown: 10, PageUp: -10 }[e.key];
    if (step) { e.preventDefault(); show(current + step); }
    if (e.key === "Escape") location.hash = "";
  });
  $("back").addEventListener("click", () => { location.hash = ""; });
  $("login").addEventListener("submit", (e) => {
    e.preventDefault();
    sessionStorage.setItem(TOKEN, $("token").value);
    location.reload();
  });
  window.addEventListener("hashchange", route);

  refresh().catch(failed);
  route();
  poll();
})();
