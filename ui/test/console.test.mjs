// The console against a real single-node `quorumq serve` with JWT auth:
// log in, create queues, send from the page, dead-letter and redrive, filter
// and purge, a token without admin scope, both viewports, the keyboard, and
// no console errors anywhere.

import assert from "node:assert/strict";
import { join } from "node:path";
import { test } from "node:test";
import { artifacts, browser, freePort, mintToken, ready, rest, serve, tempDir, waitFor, watch, writeSecret } from "./helpers.mjs";

const admin = "queues:admin messages:send messages:receive messages:peek cluster:admin";

test("console on one node: queues, messages, dead letters, scopes", { timeout: 90000 }, async (t) => {
  const dir = tempDir(t);
  const secret = writeSecret(dir);
  const [http, grpc, raft] = await Promise.all([freePort(), freePort(), freePort()]);
  const httpAddr = `127.0.0.1:${http}`;
  serve(t, ["--data-dir", join(dir, "data"), "--http-addr", httpAddr, "--grpc-addr", `127.0.0.1:${grpc}`,
    "--raft-addr", `127.0.0.1:${raft}`, "--metrics-addr", "", "--sqs-addr", "", "--auth-hs256-secret-file", secret], "serve");
  await ready(httpAddr);
  const base = `http://${httpAddr}`;
  const adminTok = mintToken(secret, "acme", admin);
  const readerTok = mintToken(secret, "acme", "messages:peek");

  const b = await browser(t);
  const ctx = await b.newContext({ viewport: { width: 1280, height: 800 } });
  const page = await ctx.newPage();
  page.setDefaultTimeout(10000);
  const errors = watch(page);

  await t.test("log in with a token", async () => {
    await page.goto(`${base}/ui/`);
    await page.getByTestId("login-needed").waitFor(); // asks first: no refused calls
    await page.getByLabel("Bearer token").fill(adminTok);
    await page.getByRole("button", { name: "Log in" }).click();
    await page.getByTestId("who").filter({ hasText: "tenant acme" }).waitFor();
    // The overview shows this node leading its shards.
    await page.locator('[data-testid="nodes"] tr[data-node="1"]').filter({ hasText: "online" }).waitFor();
    await page.locator('[data-testid="shards"] [data-testid="leader"]').first().filter({ hasText: "1" }).waitFor();
    assert.equal(await page.evaluate(() => sessionStorage.getItem("quorumq.token")), adminTok);
  });

  await t.test("create queues from the page", async () => {
    await page.getByRole("navigation").getByRole("link", { name: "Queues" }).click();
    for (const [name, dlq] of [["jobs-dlq", ""], ["jobs", "jobs-dlq"]]) {
      await page.locator("#new-name").fill(name);
      await page.locator("#new-dlq").fill(dlq);
      await page.locator("#new-max-receive").fill("1");
      await page.getByRole("button", { name: "Create" }).click();
      await page.getByTestId("notice").filter({ hasText: `Created ${name}` }).waitFor();
      await page.locator(`tr[data-queue="${name}"]`).waitFor();
    }
    const q = await rest(base, adminTok, "GET", "/v1/queues/jobs");
    assert.deepEqual(q.attributes.deadLetter, { queue: "jobs-dlq", maxReceiveCount: 1 });
  });

  await t.test("send a message from the page and see the depth change", async () => {
    await page.locator('tr[data-queue="jobs"]').getByRole("link", { name: "jobs", exact: true }).click();
    await page.getByTestId("stat-visible").filter({ hasText: /^0$/ }).waitFor();
    // Its partitions and the shard of each, as the API has them.
    const { partitionShards } = await rest(base, adminTok, "GET", "/v1/queues/jobs");
    assert.ok(partitionShards.length > 0);
    const want = partitionShards.map((sh, i) => `${i}${sh}`).join("|");
    await waitFor(`partitions ${want} on the page`, async () =>
      (await page.getByRole("region", { name: "Partitions" }).locator("tbody tr").allTextContents()).join("|") === want);
    await page.getByLabel("Message body").fill("hello from the console");
    await page.getByRole("button", { name: "Send", exact: true }).click();
    await page.getByTestId("notice").filter({ hasText: "Sent " }).waitFor();
    await page.getByTestId("stat-visible").filter({ hasText: /^1$/ }).waitFor();
    await page.getByTestId("messages").getByText("hello from the console").first().waitFor();
    // The node counted the send for the rate charts (GET /v1/history).
    await page.getByTestId("queue-rates").filter({ hasText: "1 sent in the last hour" }).waitFor();
    await page.screenshot({ path: join(artifacts, "queue.png"), fullPage: true });
  });

  await t.test("dead-letter a message and redrive it from the DLQ page", async () => {
    // A client receives it twice (max_receive_count 1): the second receive
    // moves it to jobs-dlq.
    const got = await rest(base, adminTok, "POST", "/v1/queues/jobs/messages:receive", { visibilityTimeout: "0s" });
    assert.equal(got.messages.length, 1);
    await waitFor("the dead-letter move", async () => {
      await rest(base, adminTok, "POST", "/v1/queues/jobs/messages:receive", {});
      const dlq = await rest(base, adminTok, "GET", "/v1/queues/jobs-dlq");
      return dlq.stats.visible === "1";
    });
    await page.getByTestId("stat-visible").filter({ hasText: /^0$/ }).waitFor();
    await page.goto(`${base}/ui/#/queues/jobs-dlq`);
    // A fresh load: the depth chart starts from the one sample the page
    // takes first (the next comes 2 s later), which must span a minute,
    // not the years uPlot gives a single point.
    await page.reload();
    const span = await waitFor("the depth chart's time span", async () =>
      Number(await page.getByRole("img", { name: "Depth", exact: true }).getAttribute("data-span")), 10000, 20);
    assert.ok(span > 0 && span <= 3600, `depth chart spans ${span} s`);
    const dlq = page.getByTestId("dlq");
    await dlq.getByText("Dead-letter queue of jobs").waitFor();
    const row = page.getByTestId("messages").locator("tbody tr").first();
    await row.filter({ hasText: "hello from the console" }).waitFor();
    assert.equal(await row.getByTestId("receives").textContent(), "1");
    assert.match(await row.textContent(), /jobs/); // its source queue
    await page.screenshot({ path: join(artifacts, "dlq.png"), fullPage: true });
    await dlq.getByTestId("redrive-all").click();
    await page.getByRole("dialog").getByRole("button", { name: "Redrive" }).click();
    await page.getByTestId("notice").filter({ hasText: "Redrove 1 message(s)" }).waitFor();
    await page.getByTestId("stat-visible").filter({ hasText: /^0$/ }).waitFor();
    const jobs = await rest(base, adminTok, "GET", "/v1/queues/jobs");
    assert.equal(jobs.stats.visible, "1");
  });

  await t.test("redrive some of a dead-letter queue's messages", async () => {
    // jobs holds the redriven message; a second joins it, and both are
    // dead-lettered (receives with a zero lease until the DLQ has both).
    await rest(base, adminTok, "POST", "/v1/queues/jobs/messages", { body: "second dead letter" });
    await waitFor("both dead-letter moves", async () => {
      await rest(base, adminTok, "POST", "/v1/queues/jobs/messages:receive", { maxMessages: 10, visibilityTimeout: "0s" });
      const dlq = await rest(base, adminTok, "GET", "/v1/queues/jobs-dlq");
      return dlq.stats.visible === "2";
    });
    await page.goto(`${base}/ui/#/queues/jobs-dlq`);
    const dlq = page.getByTestId("dlq");
    await page.getByTestId("stat-visible").filter({ hasText: /^2$/ }).waitFor();
    await dlq.getByLabel("Messages to redrive").fill("1");
    await dlq.getByTestId("redrive-some").click();
    const dialog = page.getByRole("dialog");
    await dialog.getByText("Move up to 1 message(s) from jobs-dlq").waitFor();
    await dialog.getByRole("button", { name: "Redrive" }).click();
    await page.getByTestId("notice").filter({ hasText: "Redrove 1 message(s)" }).waitFor();
    await page.getByTestId("stat-visible").filter({ hasText: /^1$/ }).waitFor();
    const left = await rest(base, adminTok, "GET", "/v1/queues/jobs-dlq/messages");
    assert.equal(left.messages.length, 1);
    const jobs = await rest(base, adminTok, "GET", "/v1/queues/jobs");
    assert.equal(jobs.stats.visible, "1");
  });

  await t.test("edit attributes and set a tenant quota (admin)", async () => {
    await page.goto(`${base}/ui/#/queues/jobs`);
    await page.getByText("Edit attributes").click();
    await page.locator("#edit-vt").fill("45s");
    await page.getByRole("button", { name: "Save" }).click();
    await page.getByTestId("notice").filter({ hasText: "Updated jobs" }).waitFor();
    const q = await rest(base, adminTok, "GET", "/v1/queues/jobs");
    assert.equal(q.attributes.visibilityTimeout, "45s");
    assert.equal(q.attributes.deadLetter.queue, "jobs-dlq"); // the rest kept

    await page.getByRole("navigation").getByRole("link", { name: "Tenants" }).click();
    const box = page.getByTestId("tenant");
    await box.getByRole("rowheader", { name: "Queues" }).waitFor();
    assert.match(await box.locator("tr", { hasText: "Queues" }).first().textContent(), /Queues2no limit/);
    await page.locator("#q-queues").fill("10");
    await page.getByRole("button", { name: "Set quota" }).click();
    await page.getByTestId("notice").filter({ hasText: "Quota of acme set" }).waitFor();
    await box.locator("tr", { hasText: "Queues" }).filter({ hasText: /Queues210$/ }).waitFor();
    const quota = await rest(base, adminTok, "GET", "/v1/tenants/acme/quota");
    assert.equal(quota.quota.maxQueues, "10");
  });

  await t.test("keyboard: tab to the navigation, sort and cancel a dialog", async () => {
    await page.goto(`${base}/ui/#/`);
    // A fresh load: after a hash change Chromium starts Tab from where the
    // last focused element was (the previous step's button), which
    // made this step flaky; a user arriving at the page starts at the top.
    await page.reload();
    await page.locator("#main h1").waitFor();
    await page.keyboard.press("Tab"); // the skip link comes first
    assert.equal(await page.evaluate(() => document.activeElement?.textContent), "Skip to content");
    let found = false;
    for (let i = 0; i < 8 && !found; i++) {
      await page.keyboard.press("Tab");
      found = (await page.evaluate(() => document.activeElement?.textContent)) === "Queues";
    }
    assert.ok(found, "Queues link reachable with Tab");
    await page.keyboard.press("Enter");
    await page.waitForURL(/#\/queues$/);
    const visibleHeader = page.locator("th", { hasText: "Visible" });
    await visibleHeader.getByRole("button").focus();
    await page.keyboard.press("Enter");
    assert.equal(await visibleHeader.getAttribute("aria-sort"), "ascending");
    await page.locator('tr[data-queue="jobs"]').getByRole("button", { name: "Delete" }).focus();
    await page.keyboard.press("Enter");
    await page.getByRole("dialog").waitFor();
    await page.keyboard.press("Escape"); // cancels: nothing deleted
    await page.getByRole("dialog").waitFor({ state: "detached" });
    await rest(base, adminTok, "GET", "/v1/queues/jobs");
    await page.screenshot({ path: join(artifacts, "queues.png"), fullPage: true });
  });

  await t.test("filter the queues table, purge a queue (confirmed)", async () => {
    await page.goto(`${base}/ui/#/queues`);
    await page.locator('tr[data-queue="jobs"]').waitFor();
    await page.getByLabel("Filter queues by name").fill("DLQ");
    await page.locator('tr[data-queue="jobs"]').waitFor({ state: "detached" });
    assert.equal(await page.locator("tr[data-queue]").count(), 1);
    await page.locator('tr[data-queue="jobs-dlq"]').waitFor();
    await page.getByLabel("Filter queues by name").fill("");
    const jobs = page.locator('tr[data-queue="jobs"]');
    await jobs.getByRole("button", { name: "Purge" }).click();
    await page.getByRole("dialog").getByText("Purge every message of jobs?").waitFor();
    await page.getByRole("dialog").getByRole("button", { name: "Purge" }).click();
    await page.getByTestId("notice").filter({ hasText: "Purged jobs" }).waitFor();
    await waitFor("jobs purged", async () => (await rest(base, adminTok, "GET", "/v1/queues/jobs")).stats.visible === "0");
  });

  await t.test("1280×800 and a narrow window: no sideways scrolling, navigation visible", async () => {
    for (const width of [1280, 390]) {
      await page.setViewportSize({ width, height: 800 });
      for (const hash of ["#/", "#/queues", "#/queues/jobs", "#/tenants"]) {
        await page.goto(`${base}/ui/${hash}`);
        await page.locator("#main h1").waitFor();
        await page.waitForLoadState("networkidle");
        const overflow = await page.evaluate(() => document.documentElement.scrollWidth - document.documentElement.clientWidth);
        assert.ok(overflow <= 0, `${hash}: page scrolls sideways by ${overflow}px at ${width}px`);
        assert.ok(await page.getByRole("navigation").getByRole("link", { name: "Queues" }).isVisible());
      }
    }
    await page.screenshot({ path: join(artifacts, "narrow.png"), fullPage: true });
    await page.setViewportSize({ width: 1280, height: 800 });
  });

  await t.test("a token without admin scope: no destructive buttons, a clear error when refused", async () => {
    const rctx = await b.newContext({ viewport: { width: 1280, height: 800 } });
    const rp = await rctx.newPage();
    rp.setDefaultTimeout(10000);
    const rerrors = watch(rp);
    await rp.goto(`${base}/ui/`);
    await rp.getByLabel("Bearer token").fill(readerTok);
    await rp.getByRole("button", { name: "Log in" }).click();
    await rp.getByTestId("who").waitFor();
    await rp.getByTestId("cluster-error").filter({ hasText: "cluster:admin" }).waitFor();
    assert.equal(await rp.getByRole("link", { name: "Tenants" }).count(), 0);

    await rp.getByRole("navigation").getByRole("link", { name: "Queues" }).click();
    await rp.locator('tr[data-queue="jobs"]').waitFor();
    await rp.getByTestId("readonly").waitFor();
    for (const name of ["Purge", "Delete", "Create"]) {
      assert.equal(await rp.getByRole("button", { name }).count(), 0, `no ${name} button`);
    }
    await rp.goto(`${base}/ui/#/queues/jobs-dlq`);
    await rp.getByTestId("dlq").getByTestId("readonly").waitFor();
    assert.equal(await rp.getByRole("button", { name: /Redrive|Purge|Delete/ }).count(), 0);

    // Sending needs messages:send, which this token lacks: the API refuses
    // and the page says so in words.
    await rp.goto(`${base}/ui/#/queues/jobs`);
    await rp.getByLabel("Message body").fill("not allowed");
    await rp.getByRole("button", { name: "Send", exact: true }).click();
    const err = rp.getByTestId("error");
    await err.waitFor();
    assert.match(await err.textContent(), /^Send: PERMISSION_DENIED \(403\): .*messages:send/);
    await rp.screenshot({ path: join(artifacts, "refused.png") });
    // The browser logs the refused fetch itself; nothing else may appear.
    const other = rerrors.filter((e) => !/status of 403/.test(e));
    assert.deepEqual(other, []);
    assert.ok(rerrors.length <= 1, `unexpected errors: ${rerrors}`);
    await rctx.close();
  });

  assert.deepEqual(errors, [], "console errors on the admin page");
});
