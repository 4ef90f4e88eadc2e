// Queues: a sortable, filterable table with depth sparklines, and (with
// queues:admin) create, purge and delete.

import { api, type Queue, type QueueAttributes } from "../api";
import { can } from "../auth";
import { sparkline } from "../charts";
import { confirmDialog, errorText, fmtNum, h, notice, num, showError } from "../dom";
import { lastRate, rates, record, series, type Rates } from "../history";
import { every } from "../poll";
import { allQueues } from "./overview";

type Col = { key: string; label: string; value: (q: Queue) => number | string };

const cols: Col[] = [
  { key: "name", label: "Name", value: (q) => q.name },
  { key: "visible", label: "Visible", value: (q) => num(q.stats?.visible) },
  { key: "inFlight", label: "In flight", value: (q) => num(q.stats?.inFlight) },
  { key: "delayed", label: "Delayed", value: (q) => num(q.stats?.delayed) },
  { key: "sent", label: "Sent/s", value: (q) => lastRate(queueRates.get(q.name)?.sent ?? []) },
  { key: "received", label: "Received/s", value: (q) => lastRate(queueRates.get(q.name)?.received ?? []) },
  { key: "dlq", label: "DLQ", value: (q) => q.attributes?.deadLetter?.queue ?? "" },
  { key: "partitions", label: "Partitions", value: (q) => q.attributes?.partitions ?? 1 },
  { key: "fifo", label: "FIFO", value: (q) => (q.attributes?.fifo ? "yes" : "") },
];

// queueRates: each queue's message rates over the last five minutes
// (GET /v1/history per queue), refreshed with the table.
const queueRates = new Map<string, Rates>();

// depthSeries is a queue's total depth over time.
function depthSeries(name: string) {
  const s = series(`queue:${name}`);
  if (!s) return undefined;
  return { t: s.t, v: [s.t.map((_, i) => s.v[0][i] + s.v[1][i] + s.v[2][i])] };
}

export function queuesPage(main: HTMLElement): () => void {
  let queues: Queue[] = [];
  let sortKey = "name";
  let asc = true;
  let filter = "";
  const admin = can("queues:admin");
  const tableBox = h("div", { class: "scroll" });
  const status = h("p", { class: "summary", "data-testid": "queues-status" }, "Loading…");
  const filterInput = h("input", {
    type: "search", id: "filter", placeholder: "filter by name", "aria-label": "Filter queues by name",
    oninput: () => { filter = filterInput.value.trim().toLowerCase(); draw(); },
  });

  main.append(
    h("h1", {}, "Queues"),
    admin ? createForm(() => void refresh()) : h("p", { class: "hint", "data-testid": "readonly" }, "Read-only: creating, purging and deleting queues needs the queues:admin scope."),
    h("div", { class: "toolbar" }, filterInput),
    status,
    tableBox,
  );

  function draw(): void {
    const col = cols.find((c) => c.key === sortKey)!;
    const rows = queues
      .filter((q) => !filter || q.name.toLowerCase().includes(filter))
      .sort((a, b) => {
        const x = col.value(a), y = col.value(b);
        const c = typeof x === "number" && typeof y === "number" ? x - y : String(x).localeCompare(String(y));
        return asc ? c : -c;
      });
    const head = h("tr", {}, ...cols.map((c) =>
      h("th", { scope: "col", "aria-sort": c.key === sortKey ? (asc ? "ascending" : "descending") : "none" },
        h("button", { type: "button", class: "sort", onclick: () => { asc = sortKey === c.key ? !asc : true; sortKey = c.key; draw(); } },
          c.label, c.key === sortKey ? (asc ? " ▲" : " ▼") : ""))),
      h("th", { scope: "col" }, "Depth"),
      admin ? h("th", { scope: "col" }, "Actions") : null);
    const body = rows.map((q) => {
      const d = depthSeries(q.name);
      return h("tr", { "data-queue": q.name },
        h("td", {}, h("a", { href: `#/queues/${encodeURIComponent(q.name)}` }, q.name)),
        h("td", { "data-testid": "visible" }, fmtNum(num(q.stats?.visible))),
        h("td", {}, fmtNum(num(q.stats?.inFlight))),
        h("td", {}, fmtNum(num(q.stats?.delayed))),
        h("td", {}, fmtNum(lastRate(queueRates.get(q.name)?.sent ?? [])), " ",
          sparkline(queueRates.get(q.name)?.sent ?? [], `sent per second, ${q.name}`)),
        h("td", {}, fmtNum(lastRate(queueRates.get(q.name)?.received ?? []))),
        h("td", {}, q.attributes?.deadLetter?.queue
          ? h("a", { href: `#/queues/${encodeURIComponent(q.attributes.deadLetter.queue)}` }, q.attributes.deadLetter.queue) : ""),
        h("td", {}, String(q.attributes?.partitions ?? 1)),
        h("td", {}, q.attributes?.fifo ? "yes" : ""),
        h("td", {}, sparkline(d?.v[0] ?? [], `depth of ${q.name}`)),
        admin ? h("td", { class: "actions" },
          h("button", { type: "button", onclick: () => void purge(q.name) }, "Purge"),
          h("button", { type: "button", class: "danger", onclick: () => void remove(q.name) }, "Delete")) : null);
    });
    tableBox.replaceChildren(h("table", { "data-testid": "queues" }, h("thead", {}, head), h("tbody", {}, ...body)));
    status.textContent = `${rows.length} of ${queues.length} queue${queues.length === 1 ? "" : "s"}`;
  }

  async function refresh(): Promise<void> {
    try {
      queues = await allQueues();
      queueRates.clear();
      try {
        for (const q of (await api.history("", 30, true)).queues ?? []) queueRates.set(q.queue, rates(q.buckets));
      } catch {
        // rates are extra: the table stands without them
      }
      for (const q of queues) record(`queue:${q.name}`, [num(q.stats?.visible), num(q.stats?.inFlight), num(q.stats?.delayed)]);
      draw();
    } catch (e) {
      status.textContent = `Queues: ${errorText(e)}`;
    }
  }

  async function purge(name: string): Promise<void> {
    if (!(await confirmDialog(`Purge every message of ${name}?`, "Purge"))) return;
    try {
      await api.purgeQueue(name);
      notice(`Purged ${name}`);
    } catch (e) {
      showError(e, `Purge ${name}`);
    }
    await refresh();
  }

  async function remove(name: string): Promise<void> {
    if (!(await confirmDialog(`Delete queue ${name} and every message in it?`, "Delete"))) return;
    try {
      await api.deleteQueue(name);
      notice(`Deleted ${name}`);
    } catch (e) {
      showError(e, `Delete ${name}`);
    }
    await refresh();
  }

  return every(3000, refresh);
}

function createForm(done: () => void): HTMLElement {
  const name = h("input", { id: "new-name", required: true, pattern: "[A-Za-z0-9_\\-]{1,80}(\\.fifo)?", placeholder: "orders" });
  const parts = h("input", { id: "new-partitions", type: "number", min: 1, max: 64, value: 1 });
  const dlq = h("input", { id: "new-dlq", placeholder: "(none)" });
  const maxRecv = h("input", { id: "new-max-receive", type: "number", min: 1, value: 5 });
  const fifo = h("input", { id: "new-fifo", type: "checkbox" });
  const form = h("form", {
    class: "create",
    "aria-label": "Create queue",
    onsubmit: async (ev: Event) => {
      ev.preventDefault();
      const attrs: QueueAttributes = { partitions: Number(parts.value) || 1 };
      if (fifo.checked) attrs.fifo = true;
      if (dlq.value.trim()) attrs.deadLetter = { queue: dlq.value.trim(), maxReceiveCount: Number(maxRecv.value) || 5 };
      const n = name.value.trim() + (fifo.checked && !name.value.trim().endsWith(".fifo") ? ".fifo" : "");
      try {
        await api.createQueue(n, attrs);
        notice(`Created ${n}`);
        name.value = "";
      } catch (e) {
        showError(e, `Create ${n}`);
      }
      done();
    },
  },
  h("fieldset", {}, h("legend", {}, "Create queue"),
    h("label", { for: "new-name" }, "Name"), name,
    h("label", { for: "new-partitions" }, "Partitions"), parts,
    h("label", { for: "new-dlq" }, "Dead-letter queue"), dlq,
    h("label", { for: "new-max-receive" }, "Max receives"), maxRecv,
    h("label", { class: "check" }, fifo, " FIFO"),
    h("button", { type: "submit" }, "Create")));
  return form;
}
