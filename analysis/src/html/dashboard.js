// The dashboard: reads the analysis embedded in #data and draws the period picked (figures as
// inline SVG, tables) and a package's panel. The state lives in the URL fragment
// (#period=2026-03&package=numpy) so a view can be linked to and reloaded. Package names come
// from the monitored machines and may hold markup: they only ever enter the page as text
// (append of strings, textContent, setAttribute), never as HTML.
"use strict";
(() => {
  const D = JSON.parse(document.getElementById("data").textContent);
  const NAMES = D.names || [];
  const TOP = D.top;
  const ORDER = ["all", "year", "quarter", "month"];
  const SVG = "http://www.w3.org/2000/svg";
  const COLORS = ["#4a78b5", "#d9822b", "#3a9c5c", "#c0392b", "#8e6bbf", "#8c6d31", "#d36fae", "#7f7f7f"];
  const own = (o, k) => (o && Object.prototype.hasOwnProperty.call(o, k) ? o[k] : undefined);
  const byName = (a, b) => (a < b ? -1 : a > b ? 1 : 0);

  // Every period by its label, coarsest granularity first (the first is the default view).
  const periods = new Map();
  for (const g of ORDER) for (const r of own(D.periods, g) || []) periods.set(r.period, { g, r: decode(r) });
  const months = (own(D.periods, "month") || []);
  const fallback = periods.keys().next().value;
  const known = new Set(NAMES);
  for (const { r } of periods.values())
    for (const l of [r.top_packages_by_user, r.top_packages_by_job, r.top_packages_by_process])
      for (const c of l) known.add(c.package);

  /** The compact per-package tables (see html/data.rs) back into maps by package name. */
  function decode(r) {
    r.sizes = new Map();
    for (const row of r.package_by_job_size || []) {
      const bins = [];
      for (let i = 1; i + 1 < row.length; i += 2) bins.push([row[i], row[i + 1]]);
      bins.sort((a, b) => a[0] - b[0]);
      r.sizes.set(NAMES[row[0]], bins);
    }
    r.counts = Array.isArray(r.package_counts)
      ? new Map(r.package_counts.map((x) => [NAMES[x[0]], { users: x[1], jobs: x[2], processes: x[3] }]))
      : null;
    return r;
  }

  function el(tag, attrs, ...kids) {
    const e = document.createElement(tag);
    for (const [k, v] of Object.entries(attrs || {})) e.setAttribute(k, v);
    for (const k of kids) if (k !== null && k !== undefined) e.append(k instanceof Node ? k : String(k));
    return e;
  }
  function s(tag, attrs, ...kids) {
    const e = document.createElementNS(SVG, tag);
    for (const [k, v] of Object.entries(attrs || {})) e.setAttribute(k, v);
    for (const k of kids) if (k !== null && k !== undefined) e.append(k instanceof Node ? k : String(k));
    return e;
  }
  const note = (text, id) => el("p", id ? { class: "note", id } : { class: "note" }, text);
  const pct = (x) => (x === null || x === undefined ? "" : (x * 100).toFixed(1) + " %");
  const short = (t) => (t.length > 22 ? t.slice(0, 21) + "…" : t);
  const notTop = (by) => `not in this period's top ${TOP} by ${by}`;

  /** A table; a row array with `hl` set is highlighted. */
  function table(id, caption, heads, rows) {
    const t = el("table", { id }, el("caption", null, caption));
    t.append(el("thead", null, el("tr", null, ...heads.map((h) => el("th", { scope: "col" }, h)))));
    const body = el("tbody");
    for (const row of rows) {
      const tr = el("tr", row.hl ? { class: "in" } : null);
      for (const c of row) tr.append(el("td", typeof c === "number" ? { class: "n" } : null, c));
      body.append(tr);
    }
    t.append(body);
    return t;
  }
  const figure = (svg, caption) => el("figure", null, svg, el("figcaption", null, caption));
  function chart(w, h, title) {
    const g = s("svg", { width: w, height: h, viewBox: `0 0 ${w} ${h}`, role: "img", "aria-label": title });
    g.append(s("text", { x: 4, y: 14, "font-weight": "bold" }, title));
    return g;
  }

  /** Horizontal bars, largest first as given; `log`: a log scale (job sizes span decades). */
  function bars(title, items, log) {
    const W = 560, L = 150, row = 18, T = 24, H = T + items.length * row + 8;
    const max = Math.max(1, ...items.map((i) => i[1]));
    const f = log ? (v) => Math.log10(1 + v) / Math.log10(1 + max) : (v) => v / max;
    const g = chart(W, H, title);
    items.forEach(([label, v], i) => {
      const y = T + i * row, w = Math.max(1, f(v) * (W - L - 70));
      g.append(s("text", { x: L - 4, y: y + 12, "text-anchor": "end" }, short(label)));
      g.append(s("rect", { x: L, y: y + 2, width: w.toFixed(1), height: row - 4, fill: COLORS[0] }, s("title", null, `${label}: ${v}`)));
      g.append(s("text", { x: L + w + 4, y: y + 12 }, v));
    });
    return g;
  }

  /** Lines over `xs`; a null value breaks its line. */
  function lines(title, xs, series) {
    const W = 720, H = 300, L = 50, R = 140, T = 28, B = 50;
    const max = Math.max(1, ...series.flatMap(([, v]) => v.filter((x) => x !== null)));
    const x = (i) => L + (xs.length < 2 ? 0 : (i * (W - L - R)) / (xs.length - 1));
    const y = (v) => T + (H - T - B) * (1 - v / max);
    const g = chart(W, H, title);
    g.append(s("line", { x1: L, y1: T, x2: L, y2: H - B, stroke: "#999" }));
    g.append(s("line", { x1: L, y1: H - B, x2: W - R, y2: H - B, stroke: "#999" }));
    for (const v of [0, Math.round(max / 2), max])
      g.append(s("text", { x: L - 4, y: y(v) + 4, "text-anchor": "end" }, v));
    const every = Math.ceil(xs.length / 12);
    xs.forEach((m, i) => {
      if (i % every === 0) g.append(s("text", { x: x(i), y: H - B + 14, "text-anchor": "middle" }, m));
    });
    series.forEach(([name, vals], k) => {
      const c = COLORS[k % COLORS.length];
      let d = "", pen = "M";
      vals.forEach((v, i) => {
        if (v === null) { pen = "M"; return; }
        d += `${pen}${x(i).toFixed(1)} ${y(v).toFixed(1)} `;
        pen = "L";
        g.append(s("circle", { cx: x(i).toFixed(1), cy: y(v).toFixed(1), r: 2.5, fill: c }, s("title", null, `${name} ${xs[i]}: ${v}`)));
      });
      if (d) g.append(s("path", { d, fill: "none", stroke: c, "stroke-width": 1.5 }));
      g.append(s("rect", { x: W - R + 10, y: T + k * 16, width: 10, height: 10, fill: c }));
      g.append(s("text", { x: W - R + 24, y: T + k * 16 + 9 }, short(name)));
    });
    return g;
  }

  /** Blue (−1) – white (0) – red (+1); grey where undefined. */
  function color(v) {
    if (v === null || v === undefined) return "#e6e6e6";
    const t = Math.max(-1, Math.min(1, v));
    const r = t > 0 ? 255 : Math.round(255 * (1 + t)), b = t < 0 ? 255 : Math.round(255 * (1 - t));
    return `rgb(${r},${Math.round(255 * (1 - Math.abs(t)))},${b})`;
  }
  function heatmap(title, names, m) {
    const n = names.length, c = Math.max(10, Math.min(24, Math.floor(480 / Math.max(1, n))));
    const L = 130, T = 110, W = L + n * c + 10, H = T + n * c + 10;
    const g = chart(W, H, title);
    names.forEach((p, i) => {
      g.append(s("text", { x: L - 4, y: T + i * c + c * 0.7, "text-anchor": "end" }, short(p)));
      const cx = L + i * c + c * 0.6;
      g.append(s("text", { x: cx, y: T - 4, transform: `rotate(-60 ${cx} ${T - 4})` }, short(p)));
      names.forEach((q, j) => {
        const v = m[i][j];
        g.append(s("rect", { x: L + j * c, y: T + i * c, width: c, height: c, fill: color(v), stroke: "#fff" },
          s("title", null, `${p} × ${q}: ${v === null ? "undefined" : v.toFixed(3)}`)));
      });
    });
    return g;
  }

  /** A node-count bin by its node counts: 1, 2, then 3-4, 5-8, …. */
  const binLabel = (n) => (n <= 2 ? String(n) : `${n / 2 + 1}-${n}`);
  function inPeriod(month, g, p) {
    if (g === "all") return true;
    if (g === "month") return month === p;
    if (g === "year") return month.startsWith(p + "-");
    const [y, mm] = month.split("-");
    return `${y}-Q${Math.floor((Number(mm) - 1) / 3) + 1}` === p;
  }

  function figures(g, r) {
    const sub = `Period ${r.period} · ${r.rows} records`;
    const sec = el("section", { id: "figures", "aria-label": "Figures" });
    sec.append(figure(bars("Top packages by users", r.top_packages_by_user.map((c) => [c.package, c.count])), sub));
    const bins = new Map();
    for (const [n, c] of Object.entries(r.job_sizes)) {
      let b = 1;
      while (b < Number(n)) b *= 2;
      bins.set(b, (bins.get(b) || 0) + c);
    }
    const sizes = [...bins].sort((a, b) => a[0] - b[0]).map(([b, c]) => [binLabel(b) + " nodes", c]);
    sec.append(figure(bars("Jobs by node count (log scale)", sizes, true), sub));
    const cpu = r.cpu_by_package || [];
    if (cpu.length)
      sec.append(figure(bars("CPU-hours by package (split over each process's packages)",
        cpu.map((c) => [c.package, Math.round(c.cpu_hours_split)])), sub));
    const sampled = r.sampled_cpu_by_package || [];
    if (sampled.length)
      sec.append(figure(bars("Sampled CPU-hours by package (self)",
        sampled.map((c) => [c.package, Number(c.cpu_hours_self.toFixed(1))])),
        `${sub}; ${r.sampled_cpu.processes} sampled processes`));
    const c = r.correlation;
    if (c.packages.length)
      sec.append(figure(heatmap("Correlation of the top packages by job", c.packages, c.matrix), `${sub}; ${c.jobs} jobs`));
    const ms = [...new Set(Object.values(r.monthly_users).flatMap((x) => Object.keys(x)))].sort(byName);
    if (ms.length > 1) {
      const series = r.top_packages_by_user.slice(0, 8).map((c) => {
        const per = own(r.monthly_users, c.package) || {};
        return [c.package, ms.map((m) => own(per, m) ?? 0)];
      });
      sec.append(figure(lines("Users per month of the top packages", ms, series), sub));
    }
    return sec;
  }

  function tables(r) {
    const sec = el("section", { id: "tables", "aria-label": "Tables" });
    const ranked = (id, title, what, list) =>
      sec.append(table(id, title, ["#", "package", what], list.map((c, i) => [i + 1, c.package, c.count])));
    ranked("t-users", "Top packages by users", "users", r.top_packages_by_user);
    ranked("t-jobs", "Top packages by jobs", "jobs", r.top_packages_by_job);
    ranked("t-processes", "Top packages by processes", "processes", r.top_packages_by_process);
    const shares = (id, title, key, list) =>
      sec.append(table(id, title, [key, "count", "of", "share"], list.map((x) => [x.key, x.count, x.of, pct(x.share)])));
    shares("t-env", "Environment kinds (processes)", "kind", r.env_kinds);
    shares("t-blas", "BLAS among numpy/scipy jobs", "BLAS", r.blas_in_numpy_jobs);
    shares("t-signaled", "Processes ended by a signal", "package", r.signaled);
    Object.keys(r.correlation_slices).sort(byName).forEach((p, i) =>
      sec.append(table(`t-slice-${i}`, `Correlation with ${p}`, ["package", "r"],
        r.correlation_slices[p].map(([q, v]) => [q, v.toFixed(3)]))));
    const versions = el("details", null, el("summary", null, "Versions of the top packages by users"));
    Object.keys(r.versions).sort(byName).forEach((p, i) =>
      versions.append(table(`t-versions-${i}`, `Versions of ${p} (users)`, ["version", "users", "of", "share"],
        r.versions[p].map((x) => [x.key, x.count, x.of, pct(x.share)]))));
    sec.append(versions);
    const cpu = r.cpu_by_package || [];
    if (cpu.length)
      sec.append(table("t-cpu", "CPU-hours by package: split equally over each process's packages, and the whole CPU of its processes (an upper bound)",
        ["package", "processes", "CPU-hours (split)", "CPU-hours (upper bound)"],
        cpu.map((c) => [c.package, c.processes, c.cpu_hours_split.toFixed(1), c.cpu_hours.toFixed(1)])));
    const sampled = r.sampled_cpu_by_package || [];
    if (sampled.length)
      sec.append(table("t-sampled", `Sampled CPU by package: samples in its own code (self) and with it on the stack (inclusive), of the ${r.sampled_cpu.samples} samples of ${r.sampled_cpu.processes} sampled processes`,
        ["package", "processes", "jobs", "self samples", "inclusive samples", "self", "inclusive", "CPU-hours (self)"],
        sampled.map((c) => [c.package, c.processes, c.jobs, c.self_samples, c.inclusive_samples,
          pct(c.self_share), pct(c.inclusive_share), c.cpu_hours_self.toFixed(1)])));
    const idle = r.imported_not_on_cpu || [];
    if (idle.length)
      sec.append(table("t-not-on-cpu", "Imported but never on the CPU: jobs in which a sampled process imported the package, and those in which it ran",
        ["package", "jobs", "on the CPU", "never on the CPU"],
        idle.map((c) => [c.package, c.jobs, c.jobs_on_cpu, pct(c.share_never_on_cpu)])));
    const callers = el("details", null, el("summary", null, "Callers of the top packages by sampled CPU"));
    Object.keys(r.package_callers || {}).sort(byName).forEach((p, i) =>
      callers.append(table(`t-callers-${i}`, `Callers of ${p}: share of its self samples with the caller further out on the stack`,
        ["caller", "samples", "of", "share"], r.package_callers[p].map((x) => [x.key, x.count, x.of, pct(x.share)]))));
    if (callers.childElementCount > 1) sec.append(callers);
    const a = r.accounting;
    if (a) {
      sec.append(table("t-hours", `Node-hours by package (scheduler accounting; ${a.jobs_without_accounting} jobs not in it)`,
        ["package", "jobs", "node-hours"], a.node_hours_by_package.map((n) => [n.package, n.jobs, n.node_hours.toFixed(1)])));
      sec.append(table("t-accounts", "Accounts by node-hours of their Python jobs", ["account", "jobs", "node-hours"],
        a.by_account.map((n) => [n.account, n.jobs, n.node_hours.toFixed(1)])));
    }
    return sec;
  }

  /** Everything about package `p` in period `r` (of granularity `g`). */
  function packagePanel(p, g, r) {
    const sec = el("section", { id: "pkg", "aria-labelledby": "pkg-title" });
    sec.append(el("h2", { id: "pkg-title" }, `Package ${p} in ${r.period}`));
    if (!known.has(p)) {
      sec.append(note(`No records of the package ${p} in this report.`, "pkg-none"));
      return sec;
    }
    const rank = (list) => {
      const i = list.findIndex((c) => c.package === p);
      return i < 0 ? null : [i + 1, list[i].count];
    };
    const rows = [["users", r.top_packages_by_user], ["jobs", r.top_packages_by_job], ["processes", r.top_packages_by_process]].map(
      ([what, list]) => {
        const rk = rank(list);
        const n = r.counts ? (r.counts.get(p)?.[what] ?? 0) : rk ? rk[1] : notTop(what);
        return [what, n, rk ? `#${rk[0]}` : notTop(what)];
      });
    sec.append(table("p-counts", "In this period", ["measure", "count", "rank"], rows));

    // Users over time: every month of the report (this period's highlighted).
    let xs = [], vals = [];
    if (months.length) {
      xs = months.map((m) => m.period);
      vals = months.map((m) => {
        if (m.counts) return m.counts.get(p)?.users ?? 0;
        const c = m.top_packages_by_user.find((x) => x.package === p);
        return c ? c.count : null;
      });
    } else if (own(r.monthly_users, p)) {
      xs = Object.keys(r.monthly_users[p]).sort(byName);
      vals = xs.map((m) => r.monthly_users[p][m]);
    }
    if (xs.length) {
      if (xs.length > 1) sec.append(figure(lines(`Users per month of ${p}`, xs, [[p, vals]]), "Every month of the report"));
      sec.append(table("p-months", "Users per month", ["month", "users"], xs.map((m, i) => {
        const row = [m, vals[i] === null ? `not in the month's top ${TOP}` : vals[i]];
        row.hl = inPeriod(m, g, r.period);
        return row;
      })));
    } else sec.append(note("No month periods in this report.", "p-months-none"));

    const v = own(r.versions, p);
    if (v) sec.append(table("p-versions", "Versions (users)", ["version", "users", "of", "share"], v.map((x) => [x.key, x.count, x.of, pct(x.share)])));
    else sec.append(note(`Versions: ${notTop("users")}.`, "p-versions-none"));

    if (r.package_env_kinds === undefined) sec.append(note("Environment kinds per package: not in this report.", "p-env-none"));
    else {
      const e = own(r.package_env_kinds, p);
      if (e) sec.append(table("p-env", "Environment kinds (processes)", ["kind", "processes", "of", "share"], e.map((x) => [x.key, x.count, x.of, pct(x.share)])));
      else sec.append(note(`Environment kinds: ${notTop("processes")}.`, "p-env-none"));
    }

    const bins = r.sizes.get(p);
    if (bins) {
      sec.append(figure(bars(`Jobs using ${p} by node count`, bins.map(([b, c]) => [binLabel(b) + " nodes", c]), true), `Period ${r.period}`));
      sec.append(table("p-sizes", "Jobs by node count", ["nodes", "jobs"], bins.map(([b, c]) => [binLabel(b), c])));
    } else sec.append(note("Job sizes: no jobs using it in this period.", "p-sizes-none"));

    let corr = own(r.correlation_slices, p);
    const i = r.correlation.packages.indexOf(p);
    if (!corr && i >= 0)
      corr = r.correlation.packages
        .map((q, j) => [q, r.correlation.matrix[i][j]])
        .filter(([, x], j) => j !== i && x !== null)
        .sort((a, b) => b[1] - a[1] || byName(a[0], b[0]));
    if (corr) sec.append(table("p-corr", "Strongest correlations (jobs)", ["package", "r"], corr.slice(0, 10).map(([q, x]) => [q, x.toFixed(3)])));
    else sec.append(note(`Correlations: ${notTop("jobs")}.`, "p-corr-none"));
    return sec;
  }
  const sel = document.getElementById("period");
  const input = document.getElementById("package");
  const form = document.getElementById("controls");
  const dash = document.getElementById("dash");

  function state() {
    const q = new URLSearchParams(location.hash.slice(1));
    const period = periods.has(q.get("period")) ? q.get("period") : fallback;
    return { period, pkg: (q.get("package") || "").trim() };
  }
  function go(period, pkg) {
    const q = new URLSearchParams();
    q.set("period", period);
    if (pkg) q.set("package", pkg);
    const h = "#" + q.toString();
    if (location.hash === h) render();
    else location.hash = h;
  }
  function render() {
    if (!fallback) return;
    const { period, pkg } = state();
    const { g, r } = periods.get(period);
    sel.value = period;
    input.value = pkg;
    const kids = [el("h2", { id: "period-title" }, `Period ${r.period} (${g}) — ${r.rows} records`)];
    if (pkg) kids.push(packagePanel(pkg, g, r));
    kids.push(figures(g, r), tables(r));
    dash.replaceChildren(...kids);
    document.title = `pyusage report — ${r.period}${pkg ? " — " + pkg : ""}`;
  }

  const list = document.getElementById("packages");
  for (const p of [...known].sort(byName)) list.append(el("option", { value: p }));
  form.addEventListener("submit", (e) => {
    e.preventDefault();
    go(sel.value, input.value.trim());
  });
  sel.addEventListener("change", () => go(sel.value, input.value.trim()));
  input.addEventListener("change", () => go(sel.value, input.value.trim()));
  document.getElementById("clear").addEventListener("click", () => go(sel.value, ""));
  window.addEventListener("hashchange", render);
  const fixed = document.getElementById("static");
  if (fixed) fixed.remove();
  form.hidden = false;
  render();
})();
