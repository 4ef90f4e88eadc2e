// The README's two console screenshots, taken the way the README says to
// look at the console: a node started as `make run` starts it (one node, dev
// mode, default shards; only its listeners moved to free loopback ports so
// a running `make run` is not disturbed), the overview open while
// `quorumq bench --rate 1500` runs, then a dead-letter queue. Run by
// `make ui-screenshots`; writes overview.png and dlq.png to UI_DOCS
// (default ui/docs). It fails, writing nothing, when the page shows no live
// rates or logs a console error.

import assert from "node:assert/strict";
import { execFile } from "node:child_process";
import { copyFileSync, mkdirSync } from "node:fs";
import { join, resolve } from "node:path";
import { promisify } from "node:util";
import { bin, browser, freePort, ready, rest, serve, tempDir, waitFor, watch } from "./helpers.mjs";

const out = process.env.UI_DOCS || resolve(import.meta.dirname, "../docs");
const benchFor = 30; // seconds: a few of the history's 10 s buckets

// helpers.mjs ties cleanups to a node:test context; this script is not a
// test, so it runs them itself at the end.
const cleanups = [];
const t = { after: (fn) => cleanups.push(fn), passed: true };

async function main() {
  const dir = tempDir(t);
  const shots = join(dir, "shots");
  mkdirSync(shots);
  const [http, grpc, raft, metrics, sqs] = await Promise.all([freePort(), freePort(), freePort(), freePort(), freePort()]);
  const httpAddr = `127.0.0.1:${http}`;
  const grpcAddr = `127.0.0.1:${grpc}`;
  serve(t, ["--data-dir", join(dir, "data"), "--http-addr", httpAddr, "--grpc-addr", grpcAddr,
    "--raft-addr", `127.0.0.1:${raft}`, "--metrics-addr", `127.0.0.1:${metrics}`, "--sqs-addr", `127.0.0.1:${sqs}`], "serve");
  await ready(httpAddr);
  const base = `http://${httpAddr}`;

  const b = await browser(t);
  const page = await (await b.newContext({ viewport: { width: 1280, height: 800 } })).newPage();
  page.setDefaultTimeout(15000);
  const errors = watch(page);
  await page.goto(`${base}/ui/`);
  await page.locator('[data-testid="nodes"] tr[data-node="1"]').filter({ hasText: "online" }).waitFor();

  const started = Date.now();
  const bench = promisify(execFile)(bin, ["bench", "--endpoint", grpcAddr, "--queue", "bench", "--create",
    "--duration", `${benchFor}s`, "--rate", "1500", "--batch", "1"], { timeout: (benchFor + 60) * 1000 });
  const live = page.getByTestId("rates").filter({ hasText: /Now: [1-9][\d.k]* sent\/s, [1-9][\d.k]* received\/s/ });
  await live.waitFor({ timeout: 30000 });
  // Let the charts fill a few buckets, then take the picture while the
  // bench still runs (the live rates asserted again right before it).
  await waitFor("most of the bench", async () => Date.now() - started > (benchFor - 5) * 1000, (benchFor + 30) * 1000, 500);
  await live.waitFor({ timeout: 5000 });
  await page.screenshot({ path: join(shots, "overview.png") });
  await bench;

  // A dead-letter queue with three messages that were received too often.
  await rest(base, "", "POST", "/v1/queues", { name: "orders-dlq" });
  await rest(base, "", "POST", "/v1/queues", { name: "orders", attributes: { deadLetter: { queue: "orders-dlq", maxReceiveCount: 1 } } });
  for (const id of [1041, 1042, 1043]) {
    await rest(base, "", "POST", "/v1/queues/orders/messages", { body: JSON.stringify({ order: id, sku: "A-17", qty: 2 }) });
  }
  await waitFor("three dead-lettered messages", async () => {
    await rest(base, "", "POST", "/v1/queues/orders/messages:receive", { maxMessages: 10, visibilityTimeout: "0s" });
    const dlq = await rest(base, "", "GET", "/v1/queues/orders-dlq");
    return dlq.stats.visible === "3";
  }, 20000, 200);
  await page.goto(`${base}/ui/#/queues/orders-dlq`);
  await page.getByTestId("dlq").getByText("Dead-letter queue of orders").waitFor();
  await waitFor("three messages on the DLQ page", async () => (await page.getByTestId("messages").locator("tbody tr").count()) === 3);
  await page.screenshot({ path: join(shots, "dlq.png"), fullPage: true });

  assert.deepEqual(errors, [], "console errors");
  mkdirSync(out, { recursive: true });
  for (const f of ["overview.png", "dlq.png"]) copyFileSync(join(shots, f), join(out, f));
  console.log(`wrote ${join(out, "overview.png")} and ${join(out, "dlq.png")}`);
}

let failed = false;
try {
  await main();
} catch (e) {
  failed = true;
  t.passed = false;
  console.error(e);
} finally {
  for (const fn of cleanups.reverse()) await fn();
}
process.exit(failed ? 1 : 0);
