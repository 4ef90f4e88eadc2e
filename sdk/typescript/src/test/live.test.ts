// Runs the client against a live `quorumq serve` (a single dev-mode node on
// loopback ports with a temporary data dir). QUORUMQ_BIN names the binary;
// default: bin/quorumq of the repository (`make build`).
import { after, before, test } from "node:test";
import assert from "node:assert/strict";
import { execFile, spawn, type ChildProcess } from "node:child_process";
import { mkdtempSync, readFileSync, rmSync, writeFileSync } from "node:fs";
import { createServer } from "node:net";
import { tmpdir } from "node:os";
import { join, resolve } from "node:path";
import { fileURLToPath } from "node:url";
import { Code, createQuorumqClient, errorCode, errorInfo, errorReason, type QuorumqClient } from "../index.js";

const here = fileURLToPath(new URL(".", import.meta.url));
const bin = process.env.QUORUMQ_BIN ?? resolve(here, "../../../../bin/quorumq");

let server: ChildProcess | undefined;
let dataDir = "";
let logs = "";
let client: QuorumqClient;
let grpcUrl = "";

function freePort(): Promise<number> {
  return new Promise((ok, fail) => {
    const s = createServer();
    s.once("error", fail);
    s.listen(0, "127.0.0.1", () => {
      const addr = s.address();
      const port = typeof addr === "object" && addr ? addr.port : 0;
      s.close(() => ok(port));
    });
  });
}

async function waitReady(url: string, deadlineMs: number): Promise<void> {
  const deadline = Date.now() + deadlineMs;
  let last = "";
  while (Date.now() < deadline) {
    if (server?.exitCode != null) throw new Error(`quorumq exited (${server.exitCode}):\n${logs}`);
    try {
      const res = await fetch(url, { signal: AbortSignal.timeout(2000) });
      if (res.ok) return;
      last = `HTTP ${res.status}`;
    } catch (e) {
      last = String(e);
    }
    await new Promise((r) => setTimeout(r, 100));
  }
  throw new Error(`quorumq not ready at ${url} after ${deadlineMs} ms (${last}):\n${logs}`);
}

function stopServer(): Promise<void> {
  const p = server;
  if (!p || p.exitCode != null || p.signalCode != null) return Promise.resolve();
  return new Promise((ok) => {
    const kill = setTimeout(() => p.kill("SIGKILL"), 10_000);
    p.once("exit", () => {
      clearTimeout(kill);
      ok();
    });
    p.kill("SIGTERM");
  });
}

// A failed start or test still stops the server and removes its data.
process.once("exit", () => server?.kill("SIGKILL"));

before(async () => {
  dataDir = mkdtempSync(join(tmpdir(), "quorumq-ts-"));
  const [http, grpc, raft] = [await freePort(), await freePort(), await freePort()];
  server = spawn(
    bin,
    [
      "serve",
      "--data-dir", join(dataDir, "data"),
      "--http-addr", `127.0.0.1:${http}`,
      "--grpc-addr", `127.0.0.1:${grpc}`,
      "--raft-addr", `127.0.0.1:${raft}`,
      "--metrics-addr=",
      "--sqs-addr=",
    ],
    { stdio: ["ignore", "pipe", "pipe"] },
  );
  server.stdout?.on("data", (b: Buffer) => (logs += b.toString()));
  server.stderr?.on("data", (b: Buffer) => (logs += b.toString()));
  await new Promise<void>((ok, fail) => {
    server!.once("spawn", ok);
    server!.once("error", (e) => fail(new Error(`start ${bin}: ${e.message} (run make build)`)));
  });
  await waitReady(`http://127.0.0.1:${http}/readyz`, 30_000);
  grpcUrl = `http://127.0.0.1:${grpc}`;
  client = createQuorumqClient({ baseUrl: grpcUrl });
});

after(async () => {
  await stopServer();
  if (dataDir) rmSync(dataDir, { recursive: true, force: true });
});

// Queue stats are approximate: poll them with a deadline.
async function waitStats(queue: string, want: { visible: bigint; inFlight: bigint }): Promise<void> {
  const deadline = Date.now() + 10_000;
  let got = "";
  while (Date.now() < deadline) {
    const { queue: q } = await client.queues.getQueue({ name: queue });
    const st = q?.stats;
    if (st?.visible === want.visible && st.inFlight === want.inFlight) return;
    got = `visible=${st?.visible} inFlight=${st?.inFlight}`;
    await new Promise((r) => setTimeout(r, 100));
  }
  assert.fail(`${queue}: want visible=${want.visible} inFlight=${want.inFlight}, got ${got}`);
}

test("create, send, receive, delete", async () => {
  const q = await client.createQueue("ts-jobs", { visibilityTimeout: { seconds: 30n } });
  assert.equal(q.name, "ts-jobs");

  const sent = await client.send("ts-jobs", "hello from node", { attributes: { kind: "greeting" } });
  assert.ok(sent.messageId, "send returns a message id");

  const msgs = await client.receive("ts-jobs", { maxMessages: 10, waitTimeMs: 5000 });
  assert.equal(msgs.length, 1);
  assert.equal(msgs[0].body, "hello from node");
  assert.equal(msgs[0].messageId, sent.messageId);
  assert.equal(msgs[0].attributes.kind, "greeting");
  assert.equal(msgs[0].receiveCount, 1);

  await waitStats("ts-jobs", { visible: 0n, inFlight: 1n });
  await client.delete("ts-jobs", msgs[0].receiptHandle);
  // Gone, not merely invisible: the in-flight count drops to zero.
  await waitStats("ts-jobs", { visible: 0n, inFlight: 0n });

  await client.deleteQueue("ts-jobs");
});

test("nack: failed waits out the retry backoff, released comes back at once", async () => {
  await client.createQueue("ts-retry", { retryPolicy: { base: { seconds: 3600n }, factor: 2 } });
  await client.send("ts-retry", "job", { ttlMs: 600_000 });
  let [m] = await client.receive("ts-retry", { waitTimeMs: 5000 });
  const at = await client.nack("ts-retry", m.receiptHandle, { released: true });
  assert.ok(at && at.getTime() <= Date.now() + 1000, `released: visible at ${at?.toISOString()}`);
  [m] = await client.receive("ts-retry", { waitTimeMs: 5000 });
  assert.equal(m.releasedCount, 1);
  const later = await client.nack("ts-retry", m.receiptHandle);
  assert.ok(later && later.getTime() > Date.now() + 3_000_000, `failed: visible at ${later?.toISOString()}`);
  assert.equal((await client.receive("ts-retry", { waitTimeMs: 0 })).length, 0);
});

test("priority: the highest first", async () => {
  await client.createQueue("ts-prio");
  await client.send("ts-prio", "low", { priority: 1 });
  await client.send("ts-prio", "default");
  await client.send("ts-prio", "high", { priority: 8 });
  const msgs = await client.receive("ts-prio", { maxMessages: 3, waitTimeMs: 5000 });
  assert.deepEqual(
    msgs.map((m) => `${m.body}/${m.priority}`),
    ["high/8", "default/4", "low/1"],
  );
  await client.deleteQueue("ts-prio");
});

test("errors carry their google.rpc.ErrorInfo reason", async () => {
  await assert.rejects(client.send("no-such-queue", "x"), (err: unknown) => {
    assert.equal(errorCode(err), Code.NotFound);
    assert.equal(errorReason(err), "QUEUE_NOT_FOUND");
    assert.equal(errorInfo(err)?.domain, "quorumq.dev");
    return true;
  });

  // Creating a queue again is idempotent only with the same attributes.
  await client.createQueue("ts-dup", { visibilityTimeout: { seconds: 30n } });
  await assert.rejects(client.createQueue("ts-dup", { visibilityTimeout: { seconds: 60n } }), (err: unknown) => {
    assert.equal(errorCode(err), Code.AlreadyExists);
    assert.equal(errorReason(err), "QUEUE_ALREADY_EXISTS");
    return true;
  });
});

// The examples of the READMEs run as written (as JavaScript modules next to
// dist/), pointed at this server.
function readmeExample(path: string, after: string): string {
  const text = readFileSync(path, "utf8");
  const start = text.indexOf(after);
  assert.ok(start >= 0, `${path}: no "${after}"`);
  const m = /```ts\n([\s\S]*?)```/.exec(text.slice(start));
  assert.ok(m, `${path}: no ts block after "${after}"`);
  assert.ok(m[1].includes("http://127.0.0.1:9090"), `${path}: the example no longer dials 127.0.0.1:9090`);
  return m[1].replaceAll("http://127.0.0.1:9090", grpcUrl);
}

async function runExample(code: string): Promise<string> {
  const pkg = resolve(here, "../..");
  const file = join(pkg, `.readme-example-${process.pid}.mjs`);
  writeFileSync(file, code);
  try {
    return await new Promise((ok, fail) => {
      execFile(process.execPath, [file], { cwd: pkg, timeout: 30_000 }, (err, stdout, stderr) =>
        err ? fail(new Error(`${err.message}\n${stderr}`)) : ok(stdout),
      );
    });
  } finally {
    rmSync(file, { force: true });
  }
}

test("README example (Clients in other languages)", async () => {
  const out = await runExample(readmeExample(resolve(here, "../../../../README.md"), "**TypeScript (Node).**"));
  assert.equal(out.trim(), "QUEUE_NOT_FOUND");
});

test("sdk/typescript/README.md example", async () => {
  const out = await runExample(readmeExample(resolve(here, "../../README.md"), "npm ci && npm run build"));
  assert.equal(out.trim(), "true");
});
