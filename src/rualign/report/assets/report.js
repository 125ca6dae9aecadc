// rualign report: the answer browser. Model and judge text is untrusted: it is only ever put into the
// page with textContent (never innerHTML), so markup in an answer shows as literal text.
"use strict";
(function () {
  const PAGE = 100;
  const data = JSON.parse(document.getElementById("report-data").textContent);
  const S = (i) => (i === null || i === undefined ? null : data.strings[i]);
  const items = data.items;
  const el = (tag, cls, text) => {
    const node = document.createElement(tag);
    if (cls) node.className = cls;
    if (text !== undefined && text !== null) node.textContent = String(text);
    return node;
  };
  const fmt = (x, d) => (x === null || x === undefined ? "—" : Number(x).toFixed(d));
  const controls = {
    run: document.getElementById("filter-run"),
    category: document.getElementById("filter-category"),
    outcome: document.getElementById("filter-outcome"),
    search: document.getElementById("search"),
  };
  const list = document.getElementById("items");
  const count = document.getElementById("visible-count");
  const more = document.getElementById("more");
  let shown = PAGE;

  function addOptions(select, values) {
    for (const v of values) {
      const opt = el("option", null, v);
      opt.value = v;
      select.appendChild(opt);
    }
  }
  addOptions(controls.run, data.runs);
  addOptions(controls.category, data.categories);
  addOptions(controls.outcome, data.outcomes);

  function haystack(item) {
    if (item._hay === undefined) {
      item._hay = [item.id, item.category || "", S(item.prompt), S(item.answer), S(item.reference) || ""]
        .join("\n").toLowerCase();
    }
    return item._hay;
  }

  function verdictNode(v) {
    const box = el("div", "verdict");
    const parts = ["preference for model " + fmt(v.preference, 3)];
    if (v.verdict) parts.push("verdict " + v.verdict);
    if (v.probs) parts.push("probs A " + fmt(v.probs.A, 2) + " · B " + fmt(v.probs.B, 2) + " · tie " + fmt(v.probs.tie, 2));
    if (v.identical) parts.push("answers identical: not sent to the judge");
    else if (v.mode) parts.push("mode " + v.mode);
    if (v.cached) parts.push("cached");
    box.appendChild(el("strong", null, v.order.replace("_", " ") + ": "));
    box.appendChild(el("span", null, parts.join(" · ")));
    if (v.error) box.appendChild(el("div", "error", "error: " + v.error));
    const raw = S(v.raw);
    if (raw) {
      const det = el("details");
      det.appendChild(el("summary", null, "raw judge output"));
      det.appendChild(el("pre", null, raw));
      box.appendChild(det);
    }
    return box;
  }

  function card(item) {
    const node = el("article", "item outcome-" + item.outcome.replace(" ", "-"));
    node.dataset.run = data.runs[item.run];
    node.dataset.outcome = item.outcome;
    const head = el("div", "item-head");
    head.appendChild(el("span", "run", data.runs[item.run]));
    head.appendChild(el("span", "pid", "id " + item.id));
    head.appendChild(el("span", "cat muted", "category: " + (item.category || "—")));
    head.appendChild(el("span", "badge " + item.outcome.replace(" ", "-"), item.outcome));
    if (item.value !== null) head.appendChild(el("span", "value muted", "value " + fmt(item.value, 3)));
    node.appendChild(head);
    const prompt = el("div", "prompt");
    prompt.appendChild(el("div", "text prompt-text", S(item.prompt)));
    node.appendChild(prompt);
    const pair = el("div", "pair");
    const model = el("div", "side model");
    const finish = item.finish && item.finish !== "stop" ? " · finish: " + item.finish : "";
    model.appendChild(el("h4", null, "Model answer · " + fmt(item.mt, 0) + " tokens" + finish));
    model.appendChild(el("div", "text answer-text", S(item.answer)));
    const ref = el("div", "side reference");
    ref.appendChild(el("h4", null, "Reference answer · " + fmt(item.rt, 0) + " tokens"));
    const refText = S(item.reference);
    ref.appendChild(el("div", "text reference-text" + (refText === null ? " muted" : ""),
      refText === null ? "(reference answer not available)" : refText));
    pair.appendChild(model);
    pair.appendChild(ref);
    node.appendChild(pair);
    const verdicts = el("div", "verdicts");
    if (item.failure) verdicts.appendChild(el("div", "error", "failure: " + item.failure));
    for (const v of item.verdicts) verdicts.appendChild(verdictNode(v));
    node.appendChild(verdicts);
    node.appendChild(review.bar(item, node));
    return node;
  }

  // Human review: a mark per (run, prompt), kept in this browser's localStorage under a key unique to the
  // report's contents, exported as JSON for `rualign agreement`. Keys: j/k or arrows move, 1/2/3 mark, 0 clears.
  const review = (function () {
    const STORE = "rualign-review:" + data.review_key;
    const LABELS = { model: "model better", reference: "reference better", tie: "tie" };
    const KEYS = { "1": "model", "2": "reference", "3": "tie" };
    const counter = document.getElementById("review-count");
    let marks = {};
    try { marks = JSON.parse(localStorage.getItem(STORE) || "{}") || {}; } catch (e) { marks = {}; }
    const keyOf = (item) => data.runs[item.run] + "\u0000" + item.id;
    const api = { current: 0 };

    function paint(node, item) {
      const mark = marks[keyOf(item)] || "";
      node.dataset.mark = mark;
      for (const b of node.querySelectorAll(".mark-btn")) b.classList.toggle("active", b.dataset.mark === mark);
    }
    function save() {
      try { localStorage.setItem(STORE, JSON.stringify(marks)); } catch (e) { /* private mode: keep in memory */ }
      counter.textContent = String(Object.keys(marks).length);
    }
    api.set = function (item, node, mark) {
      if (mark) marks[keyOf(item)] = mark; else delete marks[keyOf(item)];
      save();
      paint(node, item);
    };
    api.bar = function (item, node) {
      const bar = el("div", "review");
      bar.appendChild(el("span", "muted", "your mark: "));
      Object.entries(KEYS).forEach(([key, mark]) => {
        const b = el("button", "mark-btn", LABELS[mark] + " (" + key + ")");
        b.type = "button";
        b.dataset.mark = mark;
        b.addEventListener("click", () => { api.focus(Array.prototype.indexOf.call(list.children, node), false);
                                            api.set(item, node, marks[keyOf(item)] === mark ? null : mark); });
        bar.appendChild(b);
      });
      node._item = item;
      paint(node, item);
      return bar;
    };
    api.focus = function (index, scroll) {
      const nodes = list.children;
      if (!nodes.length) return;
      api.current = Math.max(0, Math.min(index, nodes.length - 1));
      for (const n of nodes) n.classList.remove("current");
      nodes[api.current].classList.add("current");
      if (scroll) nodes[api.current].scrollIntoView({ block: "nearest" });
    };
    api.exportJson = function () {
      const out = Object.entries(marks).map(([k, mark]) => {
        const cut = k.indexOf("\u0000");
        return { run: k.slice(0, cut), id: k.slice(cut + 1), mark: mark };
      });
      return JSON.stringify({ format: "rualign-review", version: 1, report: data.review_key,
                              exported_at: new Date().toISOString(), marks: out }, null, 1);
    };
    document.addEventListener("keydown", (ev) => {
      const tag = (ev.target && ev.target.tagName) || "";
      if (tag === "INPUT" || tag === "SELECT" || tag === "TEXTAREA" || ev.ctrlKey || ev.metaKey || ev.altKey) return;
      const node = list.children[api.current];
      if (ev.key === "j" || ev.key === "ArrowDown") { api.focus(api.current + 1, true); ev.preventDefault(); }
      else if (ev.key === "k" || ev.key === "ArrowUp") { api.focus(api.current - 1, true); ev.preventDefault(); }
      else if (node && (KEYS[ev.key] || ev.key === "0")) {
        api.set(node._item, node, KEYS[ev.key] || null);
        api.focus(api.current + 1, true);  // next answer, so a reviewer can keep typing
        ev.preventDefault();
      }
    });
    document.getElementById("export-review").addEventListener("click", () => {
      const a = el("a");
      a.href = "data:application/json;charset=utf-8," + encodeURIComponent(api.exportJson());
      a.download = "review.json";
      document.body.appendChild(a);
      a.click();
      a.remove();
    });
    save();
    return api;
  })();

  function matches() {
    const run = controls.run.value, cat = controls.category.value, out = controls.outcome.value;
    const q = controls.search.value.trim().toLowerCase();
    return items.filter((it) => (run === "" || data.runs[it.run] === run)
      && (cat === "" || (it.category || "—") === cat)
      && (out === "" || it.outcome === out)
      && (q === "" || haystack(it).includes(q)));
  }

  function render() {
    const found = matches();
    list.replaceChildren(...found.slice(0, shown).map(card));
    review.focus(Math.min(review.current, list.children.length - 1), false);
    const visible = Math.min(shown, found.length);
    count.textContent = String(visible);
    document.getElementById("match-count").textContent = String(found.length);
    document.getElementById("total-count").textContent = String(items.length);
    more.hidden = found.length <= shown;
  }

  for (const key of ["run", "category", "outcome"]) {
    controls[key].addEventListener("change", () => { shown = PAGE; render(); });
  }
  controls.search.addEventListener("input", () => { shown = PAGE; render(); });
  more.addEventListener("click", () => { shown += PAGE; render(); });
  render();
})();
