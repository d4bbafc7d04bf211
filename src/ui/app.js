/*
 * app.js - the gpuq dashboard.  Plain JavaScript, no build step, no
 * dependencies; it speaks only the public API (doc/api.md):
 *
 *   GET /v1/status        slots, classes, backends
 *   GET /v1/jobs          recent jobs (the newest LIMIT ids), at most one
 *                         read per JOBS_MS: a listing carries payloads,
 *                         so between reads the rows are patched from
 *                         the events
 *   GET /v1/jobs/{id}     the job page, and its history for the timeline
 *   GET /v1/events        SSE: every state change; each one schedules a
 *                         refresh (at most one per REFRESH_MS) and moves
 *                         the timeline.
 *
 * Every text from the server goes into the page with textContent or as an
 * attribute value, never as markup.  doc/dashboard.md describes the page.
 */
"use strict";
(function () {
    const REFRESH_MS = 250;       /* at most one refresh per this */
    const JOBS_MS = 1000;         /* at most one /v1/jobs listing per this */
    const POLL_MS = 5000;         /* refresh anyway, for ticking numbers */
    const WINDOW_MS = 10 * 60e3;  /* the timeline's span */
    const LIMIT = 50;             /* recent jobs shown */
    const SEED_MAX = 50;          /* job histories read to seed the timeline */
    const MAX_SEGS = 5000;        /* timeline bars kept in memory */
    const MAX_TEXT = 20000;       /* characters of JSON shown per block */
    const SVGNS = "http://www.w3.org/2000/svg";
    /* One colour per class, in the order of /v1/status (the config's):
     * Okabe-Ito's colour-blind-safe set, then a few more. */
    const PALETTE = ["#0072b2", "#e69f00", "#009e73", "#cc79a7", "#56b4e9",
                     "#d55e00", "#7b61c7", "#8c6d31", "#5f7f8f", "#b8a200"];

    const $ = (id) => document.getElementById(id);

    /* --- state --- */
    const st = {
        status: null,          /* last /v1/status */
        statusAt: 0,           /* performance.now() of its arrival */
        jobs: [],              /* recent jobs, newest first */
        newest: 0,             /* highest job number seen */
        skew: 0,               /* server clock - client clock, ms */
        colours: new Map(),    /* class -> colour */
        segs: [],              /* timeline bars {job, cls, slot, start, end} */
        seeded: false,
        route: { page: "overview", job: null },
        span: WINDOW_MS,       /* the timeline's zoom: what it shows */
        job: null,             /* the job page's job */
        jobMissing: false,
    };

    /* --- small helpers --- */

    /* Builds an element: h("td", {class: "num"}, "12", child, ...).
     * Strings become text nodes: nothing is ever parsed as HTML. */
    function h(tag, attrs, ...kids) {
        const el = document.createElement(tag);
        setAttrs(el, attrs);
        for (const k of kids) add(el, k);
        return el;
    }
    function s(tag, attrs, ...kids) {
        const el = document.createElementNS(SVGNS, tag);
        setAttrs(el, attrs);
        for (const k of kids) add(el, k);
        return el;
    }
    function setAttrs(el, attrs) {
        for (const [k, v] of Object.entries(attrs || {}))
            if (v !== null && v !== undefined && v !== false)
                el.setAttribute(k, v === true ? "" : String(v));
    }
    function add(el, k) {
        if (k === null || k === undefined || k === false)
            return;
        el.append(k instanceof Node ? k : document.createTextNode(String(k)));
    }

    function serverNow() { return Date.now() + st.skew; }

    function fmtMs(ms) {
        if (ms === null || ms === undefined || isNaN(ms))
            return "";
        ms = Math.max(0, ms);
        if (ms < 1000)
            return Math.round(ms) + " ms";
        const sec = ms / 1000;
        if (sec < 60)
            return sec.toFixed(sec < 10 ? 2 : 1) + " s";
        const m = Math.floor(sec / 60), r = Math.floor(sec % 60);
        if (m < 60)
            return m + "m " + String(r).padStart(2, "0") + "s";
        const hr = Math.floor(m / 60);
        if (hr < 48)
            return hr + "h " + String(m % 60).padStart(2, "0") + "m";
        return Math.floor(hr / 24) + "d " + (hr % 24) + "h";
    }
    function parseTime(t) {
        const v = t ? Date.parse(t) : NaN;
        return isNaN(v) ? null : v;
    }
    /* A server time as local clock time (with the date if not today). */
    function fmtTime(t) {
        const v = parseTime(t);
        if (v === null)
            return "";
        const d = new Date(v - st.skew), now = new Date();
        const hms = d.toLocaleTimeString([], { hour12: false }) + "." +
              String(d.getMilliseconds()).padStart(3, "0");
        if (d.toDateString() === now.toDateString())
            return hms;
        return d.toLocaleDateString() + " " + hms;
    }
    function pct(x) {
        return (typeof x === "number" && isFinite(x))
            ? Math.round(x * 100) + "%" : "";
    }
    function jsonText(v) {
        let t;
        try {
            t = JSON.stringify(v, null, 2);
        } catch (e) {
            t = String(v);
        }
        if (t === undefined)
            t = "null";
        if (t.length > MAX_TEXT)
            t = t.slice(0, MAX_TEXT) + "\n... (" + (t.length - MAX_TEXT) +
                " more characters: GET /v1/jobs/" + (st.route.job || "") + ")";
        return t;
    }
    function compactJson(v) {
        if (v === null || v === undefined)
            return "";
        const t = typeof v === "string" ? v : JSON.stringify(v);
        return t.length > 300 ? t.slice(0, 300) + "..." : t;
    }
    function idNum(id) {
        const m = /^j(\d+)$/.exec(id || "");
        return m ? Number(m[1]) : 0;
    }
    function colour(cls) {
        if (!st.colours.has(cls))
            st.colours.set(cls, PALETTE[st.colours.size % PALETTE.length]);
        return st.colours.get(cls);
    }
    function swatch(cls) {
        const sw = h("span", { class: "swatch", "aria-hidden": "true" });
        sw.style.background = colour(cls); /* CSSOM: allowed by the CSP */
        return sw;
    }
    function stateBadge(state) {
        return h("span", { class: "st-" + state }, state);
    }
    function jobLink(id) {
        return h("a", { href: "#/job/" + id }, id);
    }

    /*
     * Puts rows (each a <tr> with data-key) into tbody, keeping the rows
     * that did not change, so focus and selection in them survive a
     * refresh.  empty: the text of the one row shown when there are none.
     */
    function syncRows(tbody, rows, empty, ncols) {
        if (rows.length === 0)
            rows = [h("tr", { "data-key": "-empty" },
                      h("td", { class: "empty", colspan: ncols }, empty))];
        const old = new Map();
        for (const tr of tbody.children)
            old.set(tr.getAttribute("data-key"), tr);
        rows.forEach((tr, i) => {
            const prev = old.get(tr.getAttribute("data-key"));
            const use = prev && prev.outerHTML === tr.outerHTML ? prev : tr;
            if (tbody.children[i] !== use)
                tbody.insertBefore(use, tbody.children[i] || null);
            if (use === tr && prev && prev.parentNode === tbody)
                prev.remove();
        });
        while (tbody.children.length > rows.length)
            tbody.lastElementChild.remove();
    }

    /* GET a JSON document; null for 404; throws on other failures. */
    async function getJson(path) {
        const r = await fetch(path, { headers: { Accept: "application/json" },
                                      cache: "no-store" });
        if (r.status === 404)
            return null;
        if (!r.ok)
            throw new Error(path + ": HTTP " + r.status);
        const date = Date.parse(r.headers.get("Date") || "");
        if (!isNaN(date)) {
            /* Date has 1 s resolution: only a real skew is corrected. */
            const skew = date + 500 - Date.now();
            st.skew = Math.abs(skew) > 2000 ? skew : 0;
        }
        return r.json();
    }

    /* --- loading --- */

    /*
     * The newest LIMIT jobs.  /v1/jobs lists in id order from the oldest,
     * so this reads from just below the newest id known (from events and
     * earlier reads); when more than a page lies above that, it finds the
     * newest id first by galloping and bisecting with limit=1 reads.
     */
    async function loadJobs() {
        const base = Math.max(0, st.newest - LIMIT);
        let r = await getJson("/v1/jobs?limit=200" +
                              (base ? "&after=j" + base : ""));
        if (r && r.next) {
            await findNewest(idNum(r.jobs[r.jobs.length - 1].id));
            const b = Math.max(0, st.newest - LIMIT);
            r = await getJson("/v1/jobs?limit=200" +
                              (b ? "&after=j" + b : ""));
        }
        const jobs = (r && r.jobs) || [];
        for (const j of jobs)
            st.newest = Math.max(st.newest, idNum(j.id));
        st.jobs = jobs.slice(-LIMIT).reverse();
    }
    async function after1(n) {
        const r = await getJson("/v1/jobs?limit=1&after=j" + n);
        return r && r.jobs.length ? idNum(r.jobs[0].id) : 0;
    }
    async function findNewest(lo) {
        let step = 256, hi = 0;
        for (;;) {           /* gallop: lo exists, find an empty hi */
            const n = await after1(lo + step);
            if (!n) {
                hi = lo + step;
                break;
            }
            lo = n;
            step *= 2;
        }
        while (hi - lo > 1) {   /* lo exists, nothing above hi */
            const mid = Math.floor((lo + hi) / 2);
            const n = await after1(mid);
            if (n)
                lo = n;
            else
                hi = mid;
            if (n >= hi)
                break;
        }
        const n = await after1(lo);
        st.newest = Math.max(st.newest, n || lo);
    }

    /* --- the refresh loop: one at a time, at most one per REFRESH_MS --- */

    let refreshTimer = 0, refreshing = false, dirty = false, lastRefresh = 0;
    let lastJobs = -1e9, jobsStale = false, jobsTimer = 0;
    let jobStale = true;   /* the job page's job must be read again */
    /* The fallback poll: everything is read again. */
    function poll() {
        jobStale = true;
        jobsStale = true;
        scheduleRefresh();
    }
    function scheduleRefresh() {
        if (refreshing) {
            dirty = true;
            return;
        }
        if (refreshTimer)
            return;
        const wait = Math.max(0, lastRefresh + REFRESH_MS - performance.now());
        refreshTimer = setTimeout(refresh, wait);
    }
    async function refresh() {
        refreshTimer = 0;
        refreshing = true;
        dirty = false;
        lastRefresh = performance.now();
        try {
            const onJob = st.route.page === "job";
            if (onJob && jobStale) {
                jobStale = false;
                try {
                    await loadJob();
                } catch (e) {
                    jobStale = true;
                    throw e;
                }
            }
            const jobsDue = !onJob &&
                  performance.now() - lastJobs >= JOBS_MS;
            if (jobsDue) {  /* events from now on need another read */
                lastJobs = performance.now();
                jobsStale = false;
            }
            const [status] = await Promise.all([
                getJson("/v1/status"), jobsDue ? loadJobs() : null]);
            if (!onJob && !jobsDue && jobsStale && !jobsTimer)
                jobsTimer = setTimeout(() => {
                    jobsTimer = 0;
                    scheduleRefresh();
                }, Math.max(0, lastJobs + JOBS_MS - performance.now()));
            st.status = status;
            st.statusAt = performance.now();
            if (status)
                reconcile(status);
            if (!st.seeded && jobsDue) {
                st.seeded = true;
                await seedTimeline();
            }
            render();
            setConn(es && es.readyState === EventSource.OPEN ? "live" :
                    everOpen ? "polling" : "connecting", null);
        } catch (e) {
            jobsStale = true;
            setConn("down", e.message);
        } finally {
            refreshing = false;
            if (dirty)
                scheduleRefresh();
        }
    }

    function setConn(state, why) {
        const el = $("conn");
        el.className = "conn " + (state === "live" ? "live" :
                                  state === "down" ? "down" : "");
        el.textContent = state === "live" ? "live" :
            state === "down" ? "unreachable" + (why ? ": " + why : "") :
            state === "polling" ? "reconnecting (polling)" : state;
    }

    /* --- events --- */

    let es = null, everOpen = false;
    function connect() {
        es = new EventSource("/v1/events");
        es.addEventListener("open", () => {
            everOpen = true;
            setConn("live", null);
            poll();  /* what changed while we were away */
        });
        es.addEventListener("job", (m) => {
            let ev;
            try {
                ev = JSON.parse(m.data);
            } catch (e) {
                return;
            }
            onEvent(ev);
            scheduleRefresh();
        });
        es.addEventListener("error", () => {
            if (es.readyState === EventSource.CLOSED) {
                /* A non-200 (503 busy / draining): the browser gives up,
                 * so we try again ourselves. */
                setConn("down", "event stream refused");
                es.close();
                setTimeout(connect, 3000);
            } else if (everOpen) {
                setConn("polling", null);
            }
        });
    }

    /* --- the timeline model: bars per slot from the events seen --- */

    function onEvent(ev) {
        const at = parseTime(ev.at);
        st.newest = Math.max(st.newest, idNum(ev.id));
        jobsStale = true;
        if (ev.id === st.route.job)
            jobStale = true;
        const row = st.jobs.find((j) => j.id === ev.id);
        if (row) {  /* until the next listing */
            row.state = ev.state;
            row.attempts = ev.attempts;
            if (ev.error && (!row.error || row.error.code !== ev.error))
                row.error = { code: ev.error };
        } else if (!st.jobs.length || idNum(ev.id) > idNum(st.jobs[0].id)) {
            /* A new job: what the event says, until the next listing. */
            st.jobs.unshift({ id: ev.id, class: ev.class, kind: ev.kind,
                              state: ev.state, attempts: ev.attempts,
                              created_at: ev.at,
                              error: ev.error ? { code: ev.error } : null });
            st.jobs.length = Math.min(st.jobs.length, LIMIT);
        }
        if (at === null)
            return;
        if (ev.state === "running") {
            if (typeof ev.slot === "number" && ev.slot >= 0)
                openSeg(ev.id, ev.class, ev.slot, at, false);
            return;
        }
        closeSeg(ev.id, at, false);
    }
    /* Is g the grant of job that started at start, seen before through
     * another source (event, status, history)?  Times from events and
     * histories agree to a few ms, and a chunk that follows at once is a
     * new grant.  loose: any open grant of the job is it (a start derived
     * from held_ms is only roughly known). */
    function sameGrant(g, job, start, loose) {
        if (g.job !== job)
            return false;
        if (loose && g.end === null)
            return true;
        return Math.abs(g.start - start) < 250 &&
            (g.end === null || start < g.end);
    }
    function openSeg(job, cls, slot, start, approx) {
        for (const g of st.segs) {
            if (sameGrant(g, job, start, approx || g.approx)) {
                if (!approx && g.approx) {
                    g.start = start;
                    g.approx = false;
                }
                return g;
            }
        }
        for (const g of st.segs) /* a grant whose end was missed */
            if (g.slot === slot && g.end === null && g.start <= start) {
                g.end = start;
                g.approxEnd = true;
            }
        const g = { job, cls, slot, start, end: null, approx,
                    approxEnd: false };
        st.segs.push(g);
        trimSegs();
        return g;
    }
    /* Ends the job's grant that started last before at. */
    function closeSeg(job, at, approx) {
        let best = null;
        for (const g of st.segs)
            if (g.job === job && g.start <= at &&
                (best === null || g.start > best.start))
                best = g;
        if (best && (best.end === null || (best.approxEnd && !approx))) {
            best.end = at;
            best.approxEnd = approx;
        }
    }
    function trimSegs() {
        const cut = serverNow() - WINDOW_MS;
        st.segs = st.segs.filter((g) => g.end === null || g.end > cut);
        if (st.segs.length > MAX_SEGS)
            st.segs.splice(0, st.segs.length - MAX_SEGS);
    }
    /* Status is the truth about who holds each slot now: events missed
     * (a reconnect) or not yet arrived are made up for here. */
    function reconcile(status) {
        const now = serverNow();
        for (const sl of status.slots || []) {
            const open = st.segs.find((g) => g.slot === sl.slot &&
                                      g.end === null);
            if (sl.job) {
                if (!open || open.job !== sl.job)
                    openSeg(sl.job, sl.class, sl.slot,
                            now - (sl.held_ms || 0), true);
            } else if (open) {
                open.end = now;
                open.approxEnd = true;
            }
        }
    }
    /* On load: the grants of recent jobs, from their histories. */
    async function seedTimeline() {
        const cut = serverNow() - WINDOW_MS;
        const want = st.jobs.filter((j) => {
            const t = parseTime(j.ended_at) || parseTime(j.started_at);
            return j.state === "running" || (t !== null && t > cut);
        }).slice(0, SEED_MAX);
        const queue = want.slice();
        const worker = async () => {
            for (let j; (j = queue.shift());) {
                let full;
                try {
                    full = await getJson("/v1/jobs/" + j.id);
                } catch (e) {
                    continue;
                }
                if (full)
                    grantsOf(full).forEach((c) => {
                        if (c.slot === null || c.shared)
                            return;
                        addGrant(full.id, full.class, c.slot, c.start,
                                 c.end);
                    });
            }
        };
        await Promise.all([worker(), worker(), worker(), worker()]);
        trimSegs();
    }

    /* A grant read from a job's history: exact times, in any order. */
    function addGrant(job, cls, slot, start, end) {
        if (start === null)
            return;
        for (const g of st.segs)
            if (sameGrant(g, job, start, false)) {
                g.start = start;
                g.approx = false;
                if (end !== null && (g.end === null || g.approxEnd)) {
                    g.end = end;
                    g.approxEnd = false;
                }
                return;
            }
        st.segs.push({ job, cls, slot, start, end, approx: false,
                       approxEnd: false });
    }

    /* A job's grants (chunks) from its history: each "running" entry to
     * the next entry. */
    function grantsOf(job) {
        const out = [], hist = job.history || [];
        hist.forEach((e, i) => {
            if (e.state !== "running")
                return;
            const d = (e.detail && typeof e.detail === "object") ?
                  e.detail : {};
            const next = hist[i + 1] || null;
            out.push({
                start: parseTime(e.at),
                end: next ? parseTime(next.at) : null,
                slot: typeof d.slot === "number" ? d.slot : null,
                token: d.token,
                shared: !!d.shared,
                outcome: next ? next.state : null,
                outcomeDetail: next ? next.detail : null,
            });
        });
        return out;
    }

    /* --- rendering: overview --- */

    function render() {
        const status = st.status;
        if (status) {
            $("version").textContent = "gpuqd " + status.version;
            $("uptime").textContent = "up " + (status.uptime_s < 60 ?
                status.uptime_s + " s" : fmtMs(status.uptime_s * 1000));
            $("draining").hidden = !status.draining;
            for (const c of status.classes || [])
                colour(c.name);
        }
        if (st.route.page === "job") {
            renderJob();
            return;
        }
        if (!status)
            return;
        renderSlots(status);
        renderClasses(status);
        renderLegend(status);
        renderTimeline();
        renderBackends(status);
        renderJobs();
    }

    /* A cell whose duration grows by itself between refreshes. */
    function tickCell(ms, running) {
        const td = h("td", { class: "num tick" }, fmtMs(ms));
        if (running) {
            td.dataset.base = String(ms);
            td.dataset.at = String(st.statusAt);
        }
        return td;
    }
    function tick() {
        for (const td of document.querySelectorAll("td.tick[data-base]"))
            td.textContent = fmtMs(Number(td.dataset.base) +
                                   performance.now() - Number(td.dataset.at));
        if (st.route.page === "overview" && !document.hidden)
            renderTimeline();
    }

    function renderSlots(status) {
        const rows = (status.slots || []).map((sl) => {
            const tr = h("tr", { "data-key": "slot" + sl.slot,
                                 "data-slot": sl.slot,
                                 "data-job": sl.job || "" });
            tr.append(h("th", { scope: "row" }, sl.slot));
            if (!sl.job) {
                tr.append(h("td", { class: "dim", colspan: 6 }, "idle"));
                return tr;
            }
            const meta = sl.metadata && typeof sl.metadata === "object" ?
                  Object.entries(sl.metadata).map(([k, v]) =>
                      k + "=" + (typeof v === "string" ? v :
                                 JSON.stringify(v))).join(" ") :
                  compactJson(sl.metadata);
            tr.append(h("td", { class: "class" }, swatch(sl.class), sl.class),
                      h("td", { class: "job" }, jobLink(sl.job)),
                      h("td", null, sl.kind || ""),
                      h("td", { class: "holder" }, sl.holder || ""),
                      h("td", { class: "wrap meta" }, meta),
                      tickCell(sl.held_ms, true));
            return tr;
        });
        syncRows(document.querySelector("#slots tbody"), rows,
                 "no slots", 7);
    }

    function shareBar(c) {
        const w = 90, ht = 10;
        const svg = s("svg", { width: w, height: ht, "aria-hidden": "true" },
                      s("rect", { class: "track", x: 0, y: 0, width: w,
                                  height: ht, rx: 2 }));
        const a = Math.max(0, Math.min(1, c.share || 0));
        svg.append(s("rect", { x: 0, y: 0, width: (a * w).toFixed(1),
                               height: ht, rx: 2, fill: colour(c.name) }));
        const tx = (Math.max(0, Math.min(1, c.target_share || 0)) * w)
              .toFixed(1);
        svg.append(s("line", { class: "target", x1: tx, x2: tx, y1: 0,
                               y2: ht }));
        return h("span", { class: "share" }, svg,
                 h("span", null, pct(c.share) + " / " + pct(c.target_share) +
                   " (weight " + c.weight + ")"));
    }

    function renderClasses(status) {
        const rows = (status.classes || []).map((c) => {
            let ex = c.executor || "";
            if (c.backend)
                ex += " → " + c.backend;
            if (c.max_hold_ms)
                ex += ", chunks ≤ " + fmtMs(c.max_hold_ms);
            let hold = c.grants ? fmtMs(c.hold_p50_ms) + " / " +
                fmtMs(c.hold_p99_ms) : "";
            if (c.chat_wait_p50_ms !== undefined && c.grants)
                hold += "; first token " + fmtMs(c.chat_wait_p50_ms) +
                " / " + fmtMs(c.chat_wait_p99_ms);
            return h("tr", { "data-key": "c-" + c.name, "data-class": c.name },
                     h("th", { scope: "row" }, swatch(c.name), c.name),
                     h("td", { class: "num" }, c.priority),
                     h("td", { class: "num ready" }, c.ready),
                     h("td", { class: "num" }, c.backoff),
                     h("td", { class: "num running" }, c.running),
                     c.ready > 0 ? tickCell(c.oldest_wait_ms, true) :
                     h("td", { class: "num dim" }, "–"),
                     h("td", null, shareBar(c)),
                     h("td", { class: "num" }, c.streak + " / " +
                       (c.max_consecutive || "∞")),
                     h("td", { class: "num" }, c.grants),
                     h("td", { class: "num" }, c.workers_waiting),
                     h("td", null, ex),
                     h("td", { class: "num" }, hold));
        });
        syncRows(document.querySelector("#classes tbody"), rows,
                 "no classes", 12);
    }

    function renderLegend(status) {
        const ul = $("legend");
        const items = (status.classes || []).map((c) =>
            h("li", null, swatch(c.name), c.name));
        ul.replaceChildren(...items);
    }

    function renderTimeline() {
        const svg = $("timeline");
        const box = $("timeline-box");
        const nslots = st.status ? (st.status.slots || []).length : 1;
        const W = Math.max(320, Math.floor(box.clientWidth || 800));
        const left = 56, right = 8, top = 4, lane = 22, gap = 6;
        const H = top + nslots * (lane + gap) + 18;
        const span = st.span, now = serverNow(), t0 = now - span;
        const x = (t) => left + (t - t0) / span * (W - left - right);
        svg.setAttribute("width", W);
        svg.setAttribute("height", H);
        svg.setAttribute("viewBox", "0 0 " + W + " " + H);
        const kids = [];
        let shown = 0;
        const busy = new Array(nslots).fill(0);
        for (let i = 0; i < nslots; i++) {
            const y = top + i * (lane + gap);
            kids.push(s("text", { class: "label", x: 0, y: y + lane / 2 + 4 },
                        "slot " + i),
                      s("rect", { class: "lane", x: left, y: y,
                                  width: W - left - right, height: lane }));
        }
        /* Ten ticks; on a narrow screen every other one is labelled. */
        const every = (W - left - right) / 10 < 48 ? 2 : 1;
        for (let m = 0; m <= 10; m++) {
            const tx = x(t0 + m * span / 10);
            const yb = top + nslots * (lane + gap);
            const ago = (10 - m) * span / 10 / 1000;
            kids.push(s("line", { class: "grid", x1: tx, x2: tx, y1: top,
                                  y2: yb - gap }));
            if ((10 - m) % every === 0)
                kids.push(s("text", { class: "axis", x: tx, y: yb + 10,
                                      "text-anchor": m === 0 ? "start" :
                                      m === 10 ? "end" : "middle" },
                            m === 10 ? "now" : ago % 60 === 0 ?
                            "-" + ago / 60 + "m" : "-" + ago + "s"));
        }
        for (const g of st.segs) {
            if (g.slot >= nslots)
                continue;
            const a = Math.max(g.start, t0), b = g.end === null ? now :
                  Math.min(g.end, now);
            if (b <= t0 || b < a)
                continue;
            const y = top + g.slot * (lane + gap);
            const x1 = x(a), wd = Math.max(1.5, x(b) - x1);
            busy[g.slot] += b - a;
            shown++;
            kids.push(s("rect", {
                class: "seg" + (g.end === null ? " open" : ""),
                x: x1.toFixed(1), y: y, width: wd.toFixed(1), height: lane,
                fill: colour(g.cls), "data-job": g.job, "data-class": g.cls,
                "data-slot": g.slot,
            }, s("title", null, g.job + " · " + g.cls + " · slot " + g.slot +
                 "\n" + fmtTime(new Date(g.start).toISOString()) + " → " +
                 (g.end === null ? "running" :
                  fmtTime(new Date(g.end).toISOString())) + " (" +
                 fmtMs((g.end === null ? now : g.end) - g.start) + ")")));
        }
        const desc = s("desc", { id: "timeline-desc" },
                       "GPU timeline, last " + spanText() + ": " + shown +
                       " grants; busy " + busy.map((ms, i) => "slot " + i +
                       " " + pct(ms / span)).join(", ") + ".");
        svg.replaceChildren(desc, ...kids);
    }

    function spanText() {
        return st.span >= 120e3 ? st.span / 60e3 + " minutes" :
            st.span / 1e3 + " seconds";
    }
    /* The zoom buttons: 10 minutes (all that is kept) or the last one. */
    function onZoom(e) {
        const b = e.target.closest("button[data-span]");
        if (!b)
            return;
        st.span = Number(b.getAttribute("data-span")) * 1000;
        for (const o of document.querySelectorAll(".zoom button"))
            o.setAttribute("aria-pressed", String(o === b));
        $("tl-span").textContent = "last " + spanText();
        renderTimeline();
    }

    function speed(b) {
        const out = [];
        if (b.s_per_audio_s)
            out.push(b.s_per_audio_s.toFixed(3) + " s per audio s (" +
                     (1 / b.s_per_audio_s).toFixed(1) + "× real time)");
        if (b.s_per_prompt_token)
            out.push((1 / b.s_per_prompt_token).toFixed(0) +
                     " prompt tok/s");
        if (b.s_per_output_token)
            out.push((1 / b.s_per_output_token).toFixed(1) +
                     " output tok/s");
        return out.length ? out.join(", ") : "not measured yet";
    }

    function renderBackends(status) {
        const list = status.backends || [];
        $("no-backends").hidden = list.length > 0;
        $("backends").hidden = list.length === 0;
        const rows = list.map((b) => h("tr", { "data-key": "b-" + b.name,
                                              "data-backend": b.name },
            h("th", { scope: "row" }, b.name),
            h("td", null, b.type),
            h("td", { class: "mono" }, b.url),
            h("td", null, h("span", { class: "badge " +
                                      (b.healthy ? "ok" : "bad") },
                            b.healthy ? "healthy" : "unhealthy")),
            h("td", null, h("span", { class: b.state === "closed" ?
                                      "st-succeeded" : "st-failed" },
                            b.state)),
            h("td", { class: "num" }, b.inflight + " / " + b.max_concurrency),
            h("td", { class: "num" }, b.calls),
            h("td", { class: "num" }, b.errors_retryable + " / " +
              b.errors_fatal),
            h("td", null, speed(b)),
            h("td", { class: "wrap" }, b.last_error || "")));
        syncRows(document.querySelector("#backends tbody"), rows, "", 10);
    }

    function renderJobs() {
        const rows = st.jobs.map((j) => {
            let why = "";
            if (j.state === "queued")
                why = (j.reason || "") + (j.position ? " (#" + j.position +
                                          ")" : "");
            if (j.error)
                why = (why ? why + "; " : "") + (j.error.code || "") +
                    (j.error.message ? ": " + j.error.message : "");
            return h("tr", { "data-key": j.id, "data-job": j.id,
                             "data-state": j.state },
                     h("th", { scope: "row" }, jobLink(j.id)),
                     h("td", null, swatch(j.class), j.class),
                     h("td", { class: "state" }, stateBadge(j.state)),
                     h("td", { class: "wrap" }, why),
                     h("td", { class: "num" }, j.attempts +
                       (j.max_attempts ? " / " + j.max_attempts : "")),
                     h("td", { class: "num" }, fmtMs(j.wait_ms)),
                     h("td", { class: "num" }, fmtMs(j.run_ms)),
                     h("td", null, fmtTime(j.created_at)),
                     h("td", null, j.holder || ""));
        });
        syncRows(document.querySelector("#jobs tbody"), rows,
                 "no jobs yet", 9);
    }

    /* --- the job page --- */

    async function loadJob() {
        const id = st.route.job;
        const j = await getJson("/v1/jobs/" + encodeURIComponent(id));
        if (st.route.job !== id)
            return;
        st.job = j;
        st.jobMissing = j === null;
    }

    function field(dl, name, value) {
        if (value === null || value === undefined || value === "")
            return;
        dl.append(h("dt", null, name),
                  value instanceof Node ? h("dd", null, value) :
                  h("dd", null, String(value)));
    }

    function renderJob() {
        const id = st.route.job;
        $("job-title").textContent = "Job " + id;
        $("job-missing").hidden = !st.jobMissing;
        $("job-body").hidden = st.jobMissing || !st.job;
        const j = st.job;
        if (!j || j.id !== id) {
            $("job-state").replaceChildren();
            $("job-fields").replaceChildren();
            return;
        }
        $("job-state").replaceChildren(h("span", { class: "badge st-" +
                                                   j.state }, j.state));
        document.title = "gpuq · " + j.id + " (" + j.state + ")";
        const dl = $("job-fields");
        const dd = [];
        const f = (n, v) => dd.push([n, v]);
        f("Class", h("span", null, swatch(j.class), j.class));
        f("Kind", j.kind);
        if (j.state === "queued")
            f("Waiting because", j.reason + (j.position ? " (position " +
                                            j.position + ")" : ""));
        f("Priority", j.priority);
        f("Attempts", j.attempts + " of " + j.max_attempts);
        f("Holder", j.holder);
        f("Slot", j.slot);
        f("Lease", j.lease_id);
        f("Created", fmtTime(j.created_at));
        f("Started", fmtTime(j.started_at));
        f("Ended", fmtTime(j.ended_at));
        f("Finished", fmtTime(j.finished_at));
        f("Ready at", fmtTime(j.ready_at));
        f("Waited", fmtMs(j.wait_ms));
        f("Ran", fmtMs(j.run_ms));
        if (j.depends_on && j.depends_on.length) {
            const span = h("span");
            j.depends_on.forEach((d, i) => {
                if (i)
                    span.append(", ");
                span.append(jobLink(d));
            });
            f("Depends on", span);
        }
        f("Idempotency key", j.idempotency_key);
        f("Callback", j.callback_url);
        if (j.metadata && Object.keys(j.metadata).length)
            f("Metadata", compactJson(j.metadata));
        const tmp = document.createDocumentFragment();
        for (const [n, v] of dd)
            field(tmp, n, v);
        dl.replaceChildren(tmp);

        const grants = grantsOf(j);
        renderStrip(j, grants);
        const now = serverNow();
        syncRows(document.querySelector("#job-chunks tbody"),
            grants.map((c, i) => h("tr", { "data-key": "g" + i },
                h("td", { class: "num" }, i + 1),
                h("td", null, c.start ? fmtTime(new Date(c.start)
                                                 .toISOString()) : ""),
                h("td", null, c.end ? fmtTime(new Date(c.end).toISOString())
                  : "running"),
                h("td", { class: "num" }, c.start ?
                  fmtMs((c.end || now) - c.start) : ""),
                h("td", { class: "num" }, c.slot === null ? "" : c.slot +
                  (c.shared ? " (shared)" : "")),
                h("td", { class: "num" }, c.token === undefined ? "" :
                  c.token),
                h("td", null, c.outcome ? stateBadge(c.outcome) : "",
                  c.outcomeDetail ? " " + compactJson(c.outcomeDetail) :
                  ""))),
            "not granted yet", 7);
        syncRows(document.querySelector("#job-history tbody"),
            (j.history || []).map((e, i) => h("tr", { "data-key": "h" + i,
                                                       "data-state": e.state },
                h("td", null, fmtTime(e.at)),
                h("td", null, stateBadge(e.state)),
                h("td", { class: "wrap mono" }, compactJson(e.detail)))),
            "no history", 3);
        $("job-result").textContent = j.result === null ||
            j.result === undefined ? "(none yet)" : jsonText(j.result);
        $("job-error-section").hidden = !j.error;
        $("job-error").textContent = j.error ? jsonText(j.error) : "";
        $("job-progress-section").hidden = j.progress === null ||
            j.progress === undefined;
        $("job-progress").textContent = j.progress ? jsonText(j.progress) :
            "";
        $("job-payload").textContent = j.payload === undefined ? "" :
            jsonText(j.payload);
    }

    /* The job's life from creation to its end (or now), its grants as
     * bars: chunked jobs show as a row of short bars. */
    function renderStrip(j, grants) {
        const svg = $("job-strip");
        const W = Math.max(320, Math.floor(svg.parentNode.clientWidth ||
                                           800));
        const H = 42;
        const t0 = parseTime(j.created_at) || serverNow();
        const t1 = Math.max(parseTime(j.finished_at) || serverNow(),
                            t0 + 1);
        const x = (t) => (t - t0) / (t1 - t0) * W;
        const end = j.finished_at ? "finished " + fmtTime(j.finished_at) :
              "now";
        const kids = [s("desc", { id: "job-strip-desc" },
                        grants.length + " grants between creation at " +
                        fmtTime(j.created_at) + " and " + end),
                      s("rect", { class: "lane", x: 0, y: 2, width: W,
                                  height: 20 }),
                      s("text", { class: "axis", x: 0, y: 36 },
                        "created " + fmtTime(j.created_at)),
                      s("text", { class: "axis", x: W, y: 36,
                                  "text-anchor": "end" }, end)];
        grants.forEach((c, i) => {
            if (c.start === null)
                return;
            const a = x(c.start), b = x(c.end === null ? t1 : c.end);
            kids.push(s("rect", { class: "seg", x: a.toFixed(1), y: 2,
                                  width: Math.max(1.5, b - a).toFixed(1),
                                  height: 20, fill: colour(j.class) },
                        s("title", null, "grant " + (i + 1) + ": " +
                          fmtMs((c.end || t1) - c.start))));
        });
        svg.setAttribute("width", W);
        svg.setAttribute("height", H);
        svg.setAttribute("viewBox", "0 0 " + W + " " + H);
        svg.replaceChildren(...kids);
    }

    /* --- routing: #/ and #/job/jN --- */

    function route() {
        const m = /^#\/job\/(j\d+)$/.exec(location.hash);
        const prev = st.route.job;
        st.route = m ? { page: "job", job: m[1] } : { page: "overview",
                                                      job: null };
        $("overview").hidden = st.route.page !== "overview";
        $("jobpage").hidden = st.route.page !== "job";
        if (st.route.page === "overview")
            document.title = "gpuq";
        if (st.route.job !== prev) {
            jobStale = true;
            st.job = null;
            st.jobMissing = false;
            $("job-body").hidden = true;
            $("job-title").textContent = "Job " + (st.route.job || "");
            window.scrollTo(0, 0);
        }
        render();
        scheduleRefresh();
    }

    /* Clicking a bar of the timeline opens its job. */
    function onTimelineClick(e) {
        const t = e.target.closest ? e.target.closest("[data-job]") : null;
        if (t)
            location.hash = "#/job/" + t.getAttribute("data-job");
    }

    function start() {
        window.addEventListener("hashchange", route);
        window.addEventListener("resize", () => {
            if (st.route.page === "overview")
                renderTimeline();
        });
        $("timeline").addEventListener("click", onTimelineClick);
        document.querySelector(".zoom").addEventListener("click", onZoom);
        setInterval(tick, 1000);
        setInterval(poll, POLL_MS);
        connect();
        route();
    }

    if (document.readyState === "loading")
        document.addEventListener("DOMContentLoaded", start);
    else
        start();
})();
