// graphile-worker process for the rota benchmark peer. Started by peer.mjs as a
// separate Node 22 process; not meant to be run by hand.
//
// run() with defaults (no local queue, default pollInterval, graphile's own
// signal handling), one task `noop` whose body is what a rota step does: run
// `sh -c true` and capture its output.
//
// Bookkeeping is in memory: each finished task pushes its job id and the
// wall-clock stamp (µs resolution: performance.timeOrigin + performance.now())
// taken just before spawning sh. Nothing per job crosses a process boundary.
//
// Protocol (stdout lines starting with "ROTA "; graphile's own log lines pass
// through and peer.mjs forwards them to stderr):
//   ROTA READY <ms since process start>  after run() resolved
//   ROTA LISTEN                          graphile's LISTEN connection is up
//   ROTA ALLRAN                          ROTA_GW_EXPECT task bodies have finished
//   ROTA REPORT {"ids":[..],"stamps":[..]}   reply to "report" on stdin
// stdin commands: "report". When stdin closes (peer died) the worker shuts
// itself down through graphile's graceful SIGTERM path.
// Env: ROTA_GW_INSTALL_DIR, ROTA_GW_DATABASE_URL, ROTA_GW_CONCURRENCY, ROTA_GW_EXPECT.
import { execFile } from "node:child_process";
import { EventEmitter } from "node:events";
import { createRequire } from "node:module";
import { createInterface } from "node:readline";
import { pathToFileURL } from "node:url";
import { promisify } from "node:util";

const execFileP = promisify(execFile);
const installDir = process.env.ROTA_GW_INSTALL_DIR;
const req = createRequire(`${installDir}/package.json`);
const { run } = await import(pathToFileURL(req.resolve("graphile-worker")).href);

const ids = [];
const stamps = [];
const expect = Number(process.env.ROTA_GW_EXPECT || 0);
let allRanSent = false;

const taskList = {
  noop: async (_payload, helpers) => {
    const t = performance.timeOrigin + performance.now();
    await execFileP("sh", ["-c", "true"]);
    ids.push(helpers.job.id);
    stamps.push(t);
    if (expect > 0 && !allRanSent && ids.length >= expect) {
      allRanSent = true;
      process.stdout.write("ROTA ALLRAN\n");
    }
  },
};

const events = new EventEmitter();
events.on("pool:listen:success", () => process.stdout.write("ROTA LISTEN\n"));

createInterface({ input: process.stdin })
  .on("line", (line) => {
    if (line.trim() === "report") {
      process.stdout.write(`ROTA REPORT ${JSON.stringify({ ids, stamps })}\n`);
    }
  })
  .on("close", () => {
    // Parent gone or done with us: graceful shutdown via graphile's handler,
    // with a hard exit if that hangs.
    setTimeout(() => process.exit(3), 10000).unref();
    process.kill(process.pid, "SIGTERM");
  });

const runner = await run({
  connectionString: process.env.ROTA_GW_DATABASE_URL,
  concurrency: Number(process.env.ROTA_GW_CONCURRENCY || 1),
  noHandleSignals: false,
  taskList,
  events,
});
process.stdout.write(`ROTA READY ${performance.now().toFixed(3)}\n`);
await runner.promise;
