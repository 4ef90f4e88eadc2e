// The console against a three-node cluster through an API node (dev mode):
// after kill -9 of a shard's leader, the page shows the new leader within
// five seconds.

import assert from "node:assert/strict";
import { execFile } from "node:child_process";
import { promisify } from "node:util";
import { join } from "node:path";
import { test } from "node:test";
import { artifacts, bin, browser, freePort, ready, rest, serve, tempDir, waitFor, watch } from "./helpers.mjs";

test("console through the API node shows a leader change within 5 s of kill -9", { timeout: 90000 }, async (t) => {
  const dir = tempDir(t);
  const ids = [1, 2, 3];
  const raft = Object.fromEntries(await Promise.all(ids.map(async (id) => [id, `127.0.0.1:${await freePort()}`])));
  const peers = ids.map((id) => `${id}=${raft[id]}`).join(",");
  const nodes = {};
  for (const id of ids) {
    nodes[id] = serve(t, ["--node-id", String(id), "--peers", peers, "--raft-addr", raft[id], "--shards", "2",
      "--data-dir", join(dir, `n${id}`), "--http-addr", `127.0.0.1:${await freePort()}`,
      "--grpc-addr", `127.0.0.1:${await freePort()}`, "--metrics-addr", "", "--sqs-addr", "", "--log-level", "warn"], `node ${id}`);
  }
  const apiHTTP = `127.0.0.1:${await freePort()}`;
  const apiGRPC = `127.0.0.1:${await freePort()}`;
  serve(t, ["--role", "api", "--node-id", "100", "--peers", peers, "--data-dir", join(dir, "api"),
    "--http-addr", apiHTTP, "--grpc-addr", apiGRPC, "--metrics-addr", "", "--sqs-addr", "", "--log-level", "warn"], "api node");
  await ready(apiHTTP, 45000);

  const b = await browser(t);
  const page = await (await b.newContext({ viewport: { width: 1280, height: 800 } })).newPage();
  page.setDefaultTimeout(10000);
  const errors = watch(page);
  await page.goto(`http://${apiHTTP}/ui/`);
  await page.getByText("Answered by node 100 (api)").waitFor({ timeout: 30000 });

  // Every shard has a leader and every node is online, as the page shows it.
  const leaderCell = (shard) => page.locator(`[data-testid="shards"] tr[data-shard="${shard}"] [data-testid="leader"]`);
  const leaderOf = async (shard) => Number((await leaderCell(shard).textContent()).match(/^\d+/)?.[0] ?? 0);
  await waitFor("leaders and three online nodes on the page", async () =>
    (await page.locator('[data-testid="nodes"] .pill.ok').count()) === 3 &&
    (await leaderOf(0)) > 0 && (await leaderOf(1)) > 0, 30000);
  // Nodes: shards led add up to the shards; each shard row: three
  // replicas, a term, applied and commit indexes; the apply lag line.
  const led = (await page.locator('[data-testid="nodes"] [data-testid="led"]').allTextContents()).map(Number);
  assert.equal(led.reduce((a, b) => a + b, 0), 2, `shards led per node: ${led}`);
  for (const shard of [0, 1]) {
    const cells = await page.locator(`[data-testid="shards"] tr[data-shard="${shard}"] td`).allTextContents();
    const [, , replicas, , term, applied, commit] = cells;
    assert.equal(replicas.split(/[ ,]+/).filter(Boolean).length, 3, `shard ${shard} replicas: ${cells}`);
    assert.ok(Number(term) > 0 && Number(applied) > 0 && Number(commit) >= Number(applied), `shard ${shard}: ${cells}`);
  }
  await page.getByText(/Apply lag on the answering node .*: \d+ entries\./).waitFor();
  await page.screenshot({ path: join(artifacts, "cluster.png"), fullPage: true });

  // Calls made through the API node are counted there for the rate charts.
  const api = `http://${apiHTTP}`;
  await rest(api, "", "POST", "/v1/queues", { name: "through-api" });
  for (let i = 0; i < 3; i++) await rest(api, "", "POST", "/v1/queues/through-api/messages", { body: `m${i}` });
  const hist = await rest(api, "", "GET", "/v1/history?queue=through-api&points=3");
  assert.equal(hist.nodeId, "100");
  assert.equal(hist.total.reduce((n, b) => n + Number(b.sent), 0), 3);

  // While `quorumq bench` runs through the API node, the overview shows
  // its live rates.
  const bench = promisify(execFile)(bin, ["bench", "--endpoint", apiGRPC, "--queue", "bench", "--create", "--duration", "5s",
    "--rate", "200", "--batch", "1", "--producers", "1", "--consumers", "1"], { timeout: 60000 });
  await page.getByTestId("rates").filter({ hasText: /Now: [1-9][\d.k]* sent\/s, [1-9][\d.k]* received\/s/ }).waitFor({ timeout: 20000 });
  await page.screenshot({ path: join(artifacts, "cluster-bench.png") });
  await bench;

  const shard = 1;
  const old = await leaderOf(shard);
  assert.ok(nodes[old], `leader ${old} is a storage node`);
  const errorsAtKill = errors.length;
  const killed = Date.now();
  nodes[old].kill("SIGKILL");
  const newLeader = await waitFor(`a new leader of shard ${shard} on the page`, async () => {
    const l = await leaderOf(shard);
    return l > 0 && l !== old ? l : 0;
  }, 15000, 50);
  const took = Date.now() - killed;
  console.log(`# shard ${shard}: leader ${old} killed, page showed leader ${newLeader} after ${took} ms`);
  await page.locator(`[data-testid="shards"] tr[data-shard="${shard}"] [data-testid="leader-changed"]`).filter({ hasText: `was ${old}` }).waitFor();
  await page.screenshot({ path: join(artifacts, "cluster-after-kill.png"), fullPage: true });
  assert.ok(took < 5000, `the page showed the new leader after ${took} ms, want < 5000`);
  await page.locator(`[data-testid="nodes"] tr[data-node="${old}"] .pill.bad`).waitFor({ timeout: 15000 });
  // While a shard elects, the API answers 503 (UNAVAILABLE, NO_QUORUM) and
  // the browser logs each such response; the page shows the reason. Those
  // are allowed after the kill; nothing else is.
  const beforeKill = errors.slice(0, errorsAtKill);
  const afterKill = errors.slice(errorsAtKill).filter((e) => !/status of 503 .* @ http:\/\/[^/]+\/v1\//.test(e));
  if (errors.length > beforeKill.length + afterKill.length) console.log(`# allowed 503s during the election: ${errors.slice(errorsAtKill)}`);
  assert.deepEqual([...beforeKill, ...afterKill], [], "console errors");
});
