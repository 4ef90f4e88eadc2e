// Helpers of the console's browser tests: real `quorumq serve` processes on
// loopback (like tests/process_test.go) and Debian's chromium driven by
// playwright-core. Every wait has a deadline; nothing sleeps blindly.

import { spawn, execFileSync } from "node:child_process";
import { mkdtempSync, mkdirSync, writeFileSync, rmSync } from "node:fs";
import { createServer } from "node:net";
import { tmpdir } from "node:os";
import { join, resolve } from "node:path";
import { chromium } from "playwright-core";

export const bin = process.env.QUORUMQ_BIN || resolve(import.meta.dirname, "../../bin/quorumq");
export const chromiumPath = process.env.CHROMIUM || "/usr/bin/chromium";
// Screenshots land here (make test-ui keeps them as artifacts).
export const artifacts = process.env.UI_ARTIFACTS || resolve(import.meta.dirname, "../test-results");
mkdirSync(artifacts, { recursive: true });

export function tempDir(t) {
  const dir = mkdtempSync(join(tmpdir(), "quorumq-ui-"));
  t.after(() => rmSync(dir, { recursive: true, force: true }));
  return dir;
}

export function freePort() {
  return new Promise((ok, fail) => {
    const s = createServer();
    s.once("error", fail);
    s.listen(0, "127.0.0.1", () => {
      const { port } = s.address();
      s.close(() => ok(port));
    });
  });
}

// waitFor polls fn until it returns a truthy value or the deadline passes.
export async function waitFor(what, fn, ms = 15000, every = 100) {
  const end = Date.now() + ms;
  let last;
  for (;;) {
    try {
      const v = await fn();
      if (v) return v;
    } catch (e) {
      last = e;
    }
    if (Date.now() > end) throw new Error(`timed out after ${ms} ms waiting for ${what}${last ? `: ${last}` : ""}`);
    await new Promise((r) => setTimeout(r, every));
  }
}

// serve starts `quorumq serve` with args; the test's end kills it.
export function serve(t, args, log) {
  const child = spawn(bin, ["serve", ...args], { stdio: ["ignore", "ignore", "pipe"] });
  let stderr = "";
  child.stderr.on("data", (d) => {
    stderr += d;
    if (stderr.length > 1 << 20) stderr = stderr.slice(-(1 << 19));
  });
  const p = { child, log: () => stderr, kill: (sig = "SIGKILL") => { if (child.exitCode === null) child.kill(sig); } };
  t.after(async () => {
    if (child.exitCode === null && child.signalCode === null) {
      const gone = new Promise((r) => child.once("exit", r));
      child.kill("SIGKILL");
      await gone;
    }
    if (log && t.passed === false) console.error(`--- ${log} ---\n${stderr}`);
  });
  return p;
}

export async function ready(httpAddr, ms = 20000) {
  await waitFor(`http://${httpAddr}/readyz`, async () => (await fetch(`http://${httpAddr}/readyz`)).ok, ms, 200);
}

export function mintToken(secretFile, tenant, scope) {
  return execFileSync(bin, ["token", "--hs256-secret-file", secretFile, "--tenant", tenant, "--scope", scope, "--ttl", "1h"], { encoding: "utf8" }).trim();
}

// rest calls the REST API as a client would (for steps the page does not
// take itself, such as receiving a message to dead-letter it).
export async function rest(base, tok, method, path, body) {
  const resp = await fetch(base + path, {
    method,
    headers: { "Content-Type": "application/json", ...(tok ? { Authorization: `Bearer ${tok}` } : {}) },
    body: body === undefined ? undefined : JSON.stringify(body),
  });
  const data = await resp.json();
  if (!resp.ok) throw new Error(`${method} ${path}: ${resp.status} ${JSON.stringify(data)}`);
  return data;
}

export async function browser(t) {
  const b = await chromium.launch({
    executablePath: chromiumPath,
    // root in CI containers: no user namespaces for the sandbox.
    args: ["--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage"],
    timeout: 30000,
  });
  t.after(() => b.close());
  return b;
}

// watch records console errors and uncaught exceptions of a page; the
// tests assert the list is empty (allowed: predicates for errors a step
// provokes on purpose, such as a 403 the API answers).
export function watch(page) {
  const errors = [];
  page.on("console", (m) => {
    if (m.type() === "error") errors.push(`console: ${m.text()} @ ${m.location().url}`);
  });
  page.on("pageerror", (e) => errors.push(`pageerror: ${e.message}`));
  return errors;
}

export function writeSecret(dir) {
  const f = join(dir, "secret");
  writeFileSync(f, "console-test-secret-0123456789abcdef0123456789\n", { mode: 0o600 });
  return f;
}
