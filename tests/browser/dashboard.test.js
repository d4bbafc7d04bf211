/*
 * dashboard.test.js - the dashboard in a real browser.
 *
 * Starts the real gpuqd on 127.0.0.1 port 0 with a fresh data directory,
 * opens / in Debian's chromium (driven by playwright-core), changes the
 * daemon's state only through the public API (submit, lease, yield,
 * complete) and checks that the page follows over its event stream;
 * then opens a job page.  Screenshots go to build/artifacts/.
 *
 *   node --test            (from tests/browser; tests/browser/run.sh)
 *
 * Environment: GPUQD (default: the repo's bin/gpuqd), CHROMIUM (default
 * /usr/bin/chromium), ARTIFACTS (default: the repo's build/artifacts).
 * Every wait is bounded; DOM waits are shorter than the page's 5 s poll,
 * so a pass means the event stream moved the page.
 */
"use strict";
const { test, before, after } = require("node:test");
const assert = require("node:assert/strict");
const { spawn } = require("node:child_process");
const fs = require("node:fs");
const os = require("node:os");
const path = require("node:path");
const { chromium } = require("playwright-core");

const REPO = path.resolve(__dirname, "..", "..");
const GPUQD = process.env.GPUQD || path.join(REPO, "bin", "gpuqd");
const CHROMIUM = process.env.CHROMIUM || "/usr/bin/chromium";
const ARTIFACTS = process.env.ARTIFACTS ||
      path.join(REPO, "build", "artifacts");
const DOM_WAIT = 3000;       /* ms: below the page's 5 s fallback poll */

const CONFIG = `[server]
drain_timeout = 2

[gpu]
slots = 1

[class chatbot]
priority = 10

[class transcription]
priority = 0
weight = 70
max_consecutive = 2

[class summarization]
priority = 0
weight = 30
max_consecutive = 1

; No class uses it: it is there for the Backends table.  Nothing
; listens on port 9, so its health checks fail.
[backend whisper]
type = whisper-cpp
url = http://127.0.0.1:9
health_interval = 0.5
`;

let tmp, proc, base, browser, page, logPath;
const pageErrors = [];

async function sleep(ms) {
    return new Promise((r) => setTimeout(r, ms));
}

/* One API call; returns {status, body} (body parsed when JSON). */
async function api(method, p, body) {
    const r = await fetch(base + p, {
        method,
        headers: body === undefined ? {} :
            { "Content-Type": "application/json" },
        body: body === undefined ? undefined : JSON.stringify(body),
        signal: AbortSignal.timeout(10000),
    });
    const text = await r.text();
    let json = null;
    try {
        json = text ? JSON.parse(text) : null;
    } catch (e) {
        json = text;
    }
    return { status: r.status, body: json, headers: r.headers };
}

/* Waits until fn(arg) is true in the page; fails naming what. */
async function until(what, fn, arg, timeout = DOM_WAIT) {
    try {
        await page.waitForFunction(fn, arg, { timeout, polling: 50 });
    } catch (e) {
        const shot = path.join(ARTIFACTS, "dashboard-failure.png");
        await page.screenshot({ path: shot, fullPage: true }).catch(() => {});
        throw new Error(`timed out after ${timeout} ms waiting for ${what}` +
                        ` (screenshot: ${shot})`);
    }
}

const text = (sel) => page.locator(sel).first().textContent();

before(async () => {
    fs.mkdirSync(ARTIFACTS, { recursive: true });
    fs.rmSync(path.join(ARTIFACTS, "dashboard-failure.png"), { force: true });
    assert.ok(fs.existsSync(GPUQD), `no gpuqd at ${GPUQD} (run make)`);
    tmp = fs.mkdtempSync(path.join(os.tmpdir(), "gpuq-browser-"));
    const data = path.join(tmp, "data");
    fs.mkdirSync(data);
    fs.writeFileSync(path.join(tmp, "gpuqd.conf"), CONFIG);
    logPath = path.join(tmp, "gpuqd.log");
    const log = fs.openSync(logPath, "w");
    proc = spawn(GPUQD, ["--config", path.join(tmp, "gpuqd.conf"),
                         "--data", data, "--listen", "127.0.0.1:0"],
                 { stdio: ["ignore", log, log] });
    const addrFile = path.join(data, "gpuqd.addr");
    const deadline = Date.now() + 10000;
    while (!fs.existsSync(addrFile)) {
        if (proc.exitCode !== null || Date.now() > deadline)
            throw new Error("gpuqd did not start:\n" +
                            fs.readFileSync(logPath, "utf8"));
        await sleep(25);
    }
    base = "http://" + fs.readFileSync(addrFile, "utf8").trim();

    browser = await chromium.launch({
        executablePath: CHROMIUM,
        headless: true,
        args: ["--no-sandbox", "--disable-gpu"],
        timeout: 20000,
    });
    page = await browser.newPage({ viewport: { width: 1280, height: 900 } });
    page.setDefaultTimeout(10000);
    page.on("pageerror", (e) => pageErrors.push("pageerror: " + e.message));
    page.on("console", (m) => {
        /* The 404 of the unknown job asked for on purpose is expected. */
        if (m.type() === "error" &&
            !(m.location().url || "").endsWith("/v1/jobs/j999999"))
            pageErrors.push("console: " + m.text() + " " +
                            (m.location().url || ""));
    });
});

after(async () => {
    if (browser)
        await browser.close().catch(() => {});
    let status = null;
    if (proc && proc.exitCode === null) {
        const exited = new Promise((r) => proc.once("exit",
                                                    (c, sig) => r(sig || c)));
        proc.kill("SIGTERM");
        const t = setTimeout(() => proc.kill("SIGKILL"), 10000);
        status = await exited;
        clearTimeout(t);
    } else if (proc) {
        status = proc.exitCode;
    }
    const log = logPath && fs.existsSync(logPath) ?
          fs.readFileSync(logPath, "utf8") : "";
    if (tmp)
        fs.rmSync(tmp, { recursive: true, force: true });
    /* A clean exit: no crash, and no sanitizer report under make asan. */
    assert.equal(status, 0, "gpuqd exit status; its log:\n" + log);
});

test("the files are served from the binary with a strict CSP", async () => {
    const r = await fetch(base + "/");
    assert.equal(r.status, 200);
    assert.match(r.headers.get("content-type"), /^text\/html/);
    assert.equal(r.headers.get("cache-control"), "no-cache");
    const csp = r.headers.get("content-security-policy");
    assert.match(csp, /default-src 'self'/);
    assert.match(csp, /script-src 'self'/);
    assert.doesNotMatch(csp, /unsafe-inline|unsafe-eval/);
    const html = await r.text();
    assert.doesNotMatch(html, /<script>|<script [^>]*>[^<]/,
                        "no inline scripts");
    for (const [p, type] of [["/ui/app.js", /javascript/],
                             ["/ui/app.css", /text\/css/]]) {
        const a = await fetch(base + p);
        assert.equal(a.status, 200, p);
        assert.match(a.headers.get("content-type"), type, p);
        const etag = a.headers.get("etag");
        assert.ok(etag, p + " has an ETag");
        const b = await fetch(base + p, { headers: { "If-None-Match": etag } });
        assert.equal(b.status, 304, p + " revalidates");
    }
    assert.equal((await fetch(base + "/ui/nope.js")).status, 404);
});

test("the page follows the daemon live", { timeout: 45000 }, async () => {
    await page.goto(base + "/", { waitUntil: "load" });
    await until("the event stream to connect",
                () => document.getElementById("conn").textContent === "live");
    await until("the class table",
                () => document.querySelectorAll("#classes tbody tr").length
                === 3);
    assert.match(await text("#slots tbody tr[data-slot='0']"), /idle/);

    /* Two classes' jobs; metadata that would be markup if not escaped. */
    const t1 = await api("POST", "/v1/jobs", {
        class: "transcription", payload: { audio_path: "/srv/a.wav" },
        metadata: { meeting_id: "m-7", note: "<img src=x id=pwned>" },
    });
    assert.equal(t1.status, 201);
    const s1 = await api("POST", "/v1/jobs", {
        class: "summarization", payload: { text: "one" } });
    const s2 = await api("POST", "/v1/jobs", {
        class: "summarization", payload: { text: "two" } });
    assert.equal(s1.status, 201);
    assert.equal(s2.status, 201);
    const [jt, js1, js2] = [t1.body.id, s1.body.id, s2.body.id];

    await until("ready counts 1 transcription, 2 summarization", () => {
        const r = (c) => document.querySelector(
            `#classes tr[data-class='${c}'] .ready`)?.textContent;
        return r("transcription") === "1" && r("summarization") === "2";
    });
    await until("the recent jobs list to hold the three jobs", (ids) =>
        ids.every((id) => document.querySelector(`#jobs tr[data-job='${id}']`)),
        [jt, js1, js2]);
    assert.match(await text(`#jobs tr[data-job='${jt}']`), /queued/);

    /* A worker takes the transcription job: slot 0 shows its holder. */
    const lease = await api("POST", "/v1/leases", {
        classes: ["transcription"], wait: 5, worker: "worker-1" });
    assert.equal(lease.status, 200);
    assert.equal(lease.body.job.id, jt);
    await until("slot 0 to show the holder", (id) => {
        const tr = document.querySelector("#slots tr[data-slot='0']");
        return tr && tr.getAttribute("data-job") === id &&
            tr.querySelector(".holder").textContent === "worker-1";
    }, jt);
    const slot = await text("#slots tr[data-slot='0']");
    assert.match(slot, /transcription/);
    assert.match(slot, /meeting_id=m-7/);
    assert.match(slot, /<img src=x id=pwned>/, "metadata shown as text");
    assert.equal(await page.locator("#pwned").count(), 0,
                 "metadata is never parsed as markup");
    await until("transcription ready 0, running 1", () => {
        const tr = document.querySelector(
            "#classes tr[data-class='transcription']");
        return tr.querySelector(".ready").textContent === "0" &&
            tr.querySelector(".running").textContent === "1";
    });
    await until("a timeline bar for the grant", (id) =>
        document.querySelector(`#timeline rect.seg[data-job='${id}']`), jt);

    await sleep(300); /* a visible bar */
    const done = await api("POST", `/v1/leases/${lease.body.lease_id}/complete`,
                           { token: lease.body.token,
                             result: { text: "hello <b id=bold>world</b>" } });
    assert.equal(done.status, 200);
    await until("slot 0 idle and the job succeeded", (id) => {
        const tr = document.querySelector("#slots tr[data-slot='0']");
        const row = document.querySelector(`#jobs tr[data-job='${id}']`);
        return tr && tr.getAttribute("data-job") === "" &&
            row && row.getAttribute("data-state") === "succeeded";
    }, jt);
    await until("the bar to end", (id) =>
        !document.querySelector(`#timeline rect.seg.open[data-job='${id}']`),
        jt);

    /* A chunked summarization job: granted, yielded, granted again. */
    for (let i = 0; i < 2; i++) {
        const l = await api("POST", "/v1/leases", {
            classes: ["summarization"], wait: 5, worker: "worker-2" });
        assert.equal(l.status, 200);
        assert.equal(l.body.job.id, js1);
        await sleep(200);
        const end = i === 0 ? "yield" : "complete";
        const body = i === 0 ? { token: l.body.token, progress: { part: 1 } }
              : { token: l.body.token, result: { summary: "short" } };
        const r = await api("POST", `/v1/leases/${l.body.lease_id}/${end}`,
                            body);
        assert.equal(r.status, 200);
    }
    await until("two timeline bars for the chunked job", (id) =>
        document.querySelectorAll(`#timeline rect.seg[data-job='${id}']`)
            .length === 2, js1);
    await until("summarization ready 1", () => document.querySelector(
        "#classes tr[data-class='summarization'] .ready").textContent === "1");

    /* Something waits and something runs in the screenshot. */
    const l3 = await api("POST", "/v1/leases", {
        classes: ["summarization"], wait: 5, worker: "worker-2" });
    assert.equal(l3.status, 200);
    const t2 = await api("POST", "/v1/jobs", {
        class: "transcription", metadata: { meeting_id: "m-8" } });
    await until("slot 0 to show the second summarization job", (id) =>
        document.querySelector("#slots tr[data-slot='0']")
            .getAttribute("data-job") === id, js2);
    await until("the new job in the list", (id) =>
        document.querySelector(`#jobs tr[data-job='${id}']`), t2.body.id);
    await sleep(1200); /* past the page's once-a-second job listing */
    /* The last minute, so that the test's few seconds show as bars. */
    await page.click(".zoom button[data-span='60']");
    assert.equal(await page.getAttribute(".zoom button[data-span='60']",
                                         "aria-pressed"), "true");
    assert.match(await text("#timeline desc"), /last 60 seconds: 4 grants/);
    const shot = path.join(ARTIFACTS, "dashboard.png");
    await page.screenshot({ path: shot, fullPage: true });
    console.log("screenshot: " + shot);

    /* The job page of the transcription job. */
    await page.goto(base + "/#/job/" + jt);
    await until("the job page", (id) => {
        const rows = [...document.querySelectorAll("#job-history tbody tr")]
              .map((tr) => tr.getAttribute("data-state"));
        return !document.getElementById("jobpage").hidden &&
            document.getElementById("job-title").textContent === "Job " + id &&
            rows.join(",") === "queued,running,succeeded";
    }, jt);
    assert.match(await text("#job-result"), /hello <b id=bold>world<\/b>/);
    assert.equal(await page.locator("#bold").count(), 0,
                 "the result is never parsed as markup");
    assert.match(await text("#job-fields"), /worker-1/);
    assert.equal(await page.locator("#job-chunks tbody tr").count(), 1);

    /* The chunked job's page: two grants, the first one yielded. */
    await page.goto(base + "/#/job/" + js1);
    await until("the chunked job's page", () =>
        document.querySelectorAll("#job-chunks tbody tr").length === 2 &&
        [...document.querySelectorAll("#job-history tbody tr")]
            .map((tr) => tr.getAttribute("data-state")).join(",") ===
            "queued,running,queued,running,succeeded");
    assert.match(await text("#job-chunks tbody tr:nth-child(1)"), /queued/);
    assert.match(await text("#job-chunks tbody tr:nth-child(1)"), /yield/);
    assert.equal(await page.locator("#job-strip rect.seg").count(), 2);
    const jshot = path.join(ARTIFACTS, "dashboard-job.png");
    await page.screenshot({ path: jshot, fullPage: true });
    console.log("screenshot: " + jshot);

    /* A live job page: the running job's page follows its completion. */
    await page.goto(base + "/#/job/" + js2);
    await until("the running job's page", () => document.querySelector(
        "#job-state .st-running"));
    const c3 = await api("POST", `/v1/leases/${l3.body.lease_id}/complete`,
                         { token: l3.body.token, result: { summary: "2" } });
    assert.equal(c3.status, 200);
    await until("the job page to show it succeeded", () =>
        document.querySelector("#job-state .st-succeeded"));

    /* An unknown job. */
    await page.goto(base + "/#/job/j999999");
    await until("the not-found note", () =>
        !document.getElementById("job-missing").hidden);

    assert.deepEqual(pageErrors, [], "no script errors or CSP violations");
});

test("a reload draws the grants it did not see", { timeout: 20000 },
     async () => {
    /* The first three jobs: one grant, two chunks, one grant. */
    await page.goto(base + "/");
    await until("the timeline seeded from the jobs' histories", () => {
        const n = (id) => document.querySelectorAll(
            `#timeline rect.seg[data-job='${id}']`).length;
        return n("j1") === 1 && n("j2") === 2 && n("j3") === 1;
    });
    /* Health is not a job event: the page's 5 s poll brings it. */
    await until("the backend, unhealthy", () => {
        const tr = document.querySelector("#backends tr[data-backend=whisper]");
        return tr && /whisper-cpp/.test(tr.textContent) &&
            /unhealthy/.test(tr.textContent) &&
            /not measured yet/.test(tr.textContent);
    }, null, 8000);
    assert.deepEqual(pageErrors, []);
});

test("recent jobs are the newest of many", { timeout: 30000 }, async () => {
    const n = 420;
    const ids = [];
    for (let i = 0; i < n; i += 60) {  /* in batches: one commit each */
        const rs = await Promise.all(
            Array.from({ length: Math.min(60, n - i) }, () =>
                api("POST", "/v1/jobs", { class: "chatbot" })));
        for (const r of rs) {
            assert.equal(r.status, 201);
            ids.push(r.body.id);
        }
    }
    const newest = ids.sort((a, b) => a.slice(1) - b.slice(1))[n - 1];
    await page.goto("about:blank");  /* a fresh page: nothing known */
    await page.goto(base + "/");
    await until("the newest job first, fifty rows", (id) => {
        const rows = document.querySelectorAll("#jobs tbody tr");
        return rows.length === 50 && rows[0].getAttribute("data-job") === id;
    }, newest, 5000);
    assert.match(await text("#classes tr[data-class='chatbot'] .ready"),
                 new RegExp("^" + n + "$"));
    assert.deepEqual(pageErrors, []);
});
