// Queue: depth over time, attributes (editable with queues:admin),
// partitions and shards, send a test message, browse messages without
// receiving them (peek), and for a dead-letter queue: redrive.

import { api, type PeekedMessage, type Queue, type QueueAttributes } from "../api";
import { can } from "../auth";
import { lineChart } from "../charts";
import { confirmDialog, errorText, fmtAge, fmtNum, h, notice, num, showError } from "../dom";
import { lastRate, rates, record, series } from "../history";
import { every } from "../poll";

export function queuePage(main: HTMLElement, name: string): () => void {
  const admin = can("queues:admin");
  const statsBox = h("dl", { class: "stats", "data-testid": "stats" });
  const attrsBox = h("div", { class: "scroll" });
  const partsBox = h("div", { class: "scroll" });
  const msgsBox = h("div", { class: "scroll", "data-testid": "messages" });
  const dlqBox = h("section", { "aria-labelledby": "h-dlq", hidden: true, "data-testid": "dlq" });
  const depth = lineChart("Depth", ["visible", "in flight", "delayed"], "messages");
  const msgs = lineChart("Messages per second (up to the last hour)", ["sent", "received", "deleted"], "msgs/s");
  const rateLine = h("p", { class: "summary", "data-testid": "queue-rates" });
  const err = h("p", { class: "error", hidden: true, "data-testid": "queue-error" });
  let queue: Queue | null = null;
  let sources: string[] = []; // queues that dead-letter into this one
  let oldest: string | null = null; // sentAt of the oldest message browsed

  main.append(
    h("p", { class: "crumbs" }, h("a", { href: "#/queues" }, "Queues"), " / "),
    h("h1", {}, name),
    err,
    statsBox,
    h("section", { class: "charts", "aria-label": "Depth and rates" }, depth.el, msgs.el),
    rateLine,
    dlqBox,
    h("section", { "aria-labelledby": "h-send" }, h("h2", { id: "h-send" }, "Send a test message"), sendForm()),
    h("section", { "aria-labelledby": "h-msgs" },
      h("h2", { id: "h-msgs" }, "Messages"),
      h("p", { class: "hint" }, "Browsing peeks: it does not receive, lease or change the messages."),
      h("button", { type: "button", onclick: () => void browse() }, "Refresh messages"),
      msgsBox),
    h("section", { "aria-labelledby": "h-attrs" }, h("h2", { id: "h-attrs" }, "Attributes"), attrsBox),
    h("section", { "aria-labelledby": "h-parts" }, h("h2", { id: "h-parts" }, "Partitions"), partsBox),
  );
  if (admin) {
    main.append(h("section", { "aria-labelledby": "h-danger" }, h("h2", { id: "h-danger" }, "Danger zone"),
      h("button", { type: "button", class: "danger", onclick: () => void purge() }, "Purge queue"), " ",
      h("button", { type: "button", class: "danger", onclick: () => void remove() }, "Delete queue")));
  }

  async function refresh(forceAttrs = false): Promise<void> {
    try {
      queue = await api.getQueue(name);
      err.hidden = true;
    } catch (e) {
      err.hidden = false;
      err.textContent = errorText(e);
      return;
    }
    const st = queue.stats;
    record(`queue:${name}`, [num(st?.visible), num(st?.inFlight), num(st?.delayed)]);
    statsBox.replaceChildren(
      ...stat("Visible", num(st?.visible), "stat-visible"),
      ...stat("In flight", num(st?.inFlight), "stat-inflight"),
      ...stat("Delayed", num(st?.delayed), "stat-delayed"),
      h("dt", { title: "Of the messages browsed below" }, "Oldest"), h("dd", { "data-testid": "stat-oldest" }, fmtAge(oldest)),
    );
    const s = series(`queue:${name}`)!;
    depth.update(s.t, s.v);
    // Not while the user edits (the edit form is open), unless just saved.
    if (forceAttrs || !attrsBox.querySelector("details[open]")) attrsBox.replaceChildren(attrsView(queue));
    partsBox.replaceChildren(h("table", {},
      h("thead", {}, h("tr", {}, h("th", { scope: "col" }, "Partition"), h("th", { scope: "col" }, "Shard"))),
      h("tbody", {}, ...(queue.partitionShards ?? []).map((sh, i) => h("tr", {}, h("td", {}, String(i)), h("td", {}, sh))))));
  }

  // findSources tells whether this is a dead-letter queue: some queue names
  // it as its dead_letter.queue.
  async function findSources(): Promise<void> {
    try {
      const all: Queue[] = [];
      let tok = "";
      do {
        const page = await api.listQueues(tok);
        all.push(...(page.queues ?? []));
        tok = page.nextPageToken;
      } while (tok && all.length < 1000);
      sources = all.filter((q) => q.attributes?.deadLetter?.queue === name).map((q) => q.name);
    } catch {
      sources = [];
    }
    drawDLQ();
  }

  function drawDLQ(): void {
    if (!sources.length) {
      dlqBox.hidden = true;
      return;
    }
    dlqBox.hidden = false;
    const count = h("input", { id: "redrive-count", type: "number", min: 1, max: 10000, value: 10, "aria-label": "Messages to redrive" });
    dlqBox.replaceChildren(
      h("h2", { id: "h-dlq" }, "Dead letters"),
      h("p", {}, `Dead-letter queue of ${sources.join(", ")}. Redrive moves messages back to the queue each came from (oldest first).`),
      admin
        ? h("div", { class: "toolbar" },
          h("button", { type: "button", "data-testid": "redrive-some", onclick: () => void redrive(Number(count.value) || 1) }, "Redrive"), count, "messages ",
          h("button", { type: "button", "data-testid": "redrive-all", onclick: () => void redrive(10000) }, "Redrive all"))
        : h("p", { class: "hint", "data-testid": "readonly" }, "Redrive needs the queues:admin scope."),
    );
  }

  async function redrive(n: number): Promise<void> {
    if (!(await confirmDialog(`Move up to ${n} message(s) from ${name} back to their source queues?`, "Redrive"))) return;
    try {
      const r = await api.redrive(name, n);
      notice(`Redrove ${r.moved} message(s)`);
    } catch (e) {
      showError(e, "Redrive");
    }
    await Promise.all([refresh(), browse()]);
  }

  async function browse(): Promise<void> {
    let msgs: PeekedMessage[];
    try {
      msgs = (await api.peek(name, 50)).messages ?? [];
      oldest = msgs.reduce<string | null>((o, m) => (m.sentAt && (!o || Date.parse(m.sentAt) < Date.parse(o)) ? m.sentAt : o), null);
    } catch (e) {
      msgsBox.replaceChildren(h("p", { class: "error" }, `Browse: ${errorText(e)}`));
      return;
    }
    if (!msgs.length) {
      msgsBox.replaceChildren(h("p", { class: "hint" }, "No messages."));
      return;
    }
    const now = Date.now();
    msgsBox.replaceChildren(h("table", {},
      h("caption", {}, `First ${msgs.length} message(s), by partition and sequence`),
      h("thead", {}, h("tr", {}, ...["Id", "State", "Receives", "Age", "Source", "Body"].map((x) => h("th", { scope: "col" }, x)))),
      h("tbody", {}, ...msgs.map((m) => h("tr", { "data-message": m.messageId },
        h("td", { class: "mono" }, m.messageId),
        h("td", {}, (m.state ?? "").replace("MESSAGE_STATE_", "").toLowerCase().replace("_", " ")),
        h("td", { "data-testid": "receives" }, String(m.receiveCount ?? 0)),
        h("td", {}, fmtAge(m.sentAt, now)),
        h("td", {}, m.deadLetterSource ?? ""),
        h("td", {}, h("details", {}, h("summary", {}, preview(m.body)), h("pre", {}, m.body),
          m.attributes && Object.keys(m.attributes).length ? h("pre", {}, JSON.stringify(m.attributes, null, 2)) : null)))))));
  }

  function sendForm(): HTMLElement {
    const body = h("textarea", { id: "send-body", rows: 3, placeholder: "message body", "aria-label": "Message body" });
    return h("form", {
      class: "send",
      onsubmit: async (ev: Event) => {
        ev.preventDefault();
        try {
          const r = await api.send(name, body.value);
          notice(`Sent ${r.messageId}`);
          body.value = "";
        } catch (e) {
          showError(e, "Send");
        }
        await Promise.all([refresh(), browse()]);
      },
    }, body, h("button", { type: "submit" }, "Send"));
  }

  function attrsView(q: Queue): HTMLElement {
    const a = q.attributes ?? {};
    const rows: [string, string][] = [
      ["Visibility timeout", a.visibilityTimeout ?? ""],
      ["Retention", a.messageRetention ?? ""],
      ["Delivery delay", a.deliveryDelay ?? ""],
      ["Receive wait", a.receiveWait ?? ""],
      ["Max message size", a.maxMessageSize ? `${a.maxMessageSize} B` : ""],
      ["Dead-letter queue", a.deadLetter?.queue ? `${a.deadLetter.queue} after ${a.deadLetter.maxReceiveCount} receives` : "none"],
      ["FIFO", a.fifo ? `yes${a.contentBasedDeduplication ? ", content-based deduplication" : ""}` : "no"],
      ["Partitions", String(a.partitions ?? 1)],
      ["Created", q.createdAt ?? ""],
    ];
    const table = h("table", { class: "kv" }, h("tbody", {}, ...rows.map(([k, v]) => h("tr", {}, h("th", { scope: "row" }, k), h("td", {}, v)))));
    if (!admin) return table;
    return h("div", {}, table, editForm(a));
  }

  function editForm(a: QueueAttributes): HTMLElement {
    const vt = h("input", { id: "edit-vt", value: a.visibilityTimeout ?? "", placeholder: "30s" });
    const ret = h("input", { id: "edit-retention", value: a.messageRetention ?? "", placeholder: "345600s" });
    const dq = h("input", { id: "edit-dlq", value: a.deadLetter?.queue ?? "", placeholder: "(none)" });
    const mr = h("input", { id: "edit-max-receive", type: "number", min: 1, value: a.deadLetter?.maxReceiveCount ?? 5 });
    return h("details", { class: "edit" }, h("summary", {}, "Edit attributes"),
      h("form", {
        onsubmit: async (ev: Event) => {
          ev.preventDefault();
          const attrs: QueueAttributes = { visibilityTimeout: vt.value.trim() || undefined, messageRetention: ret.value.trim() || undefined };
          const mask = ["visibility_timeout", "message_retention", "dead_letter"];
          attrs.deadLetter = dq.value.trim() ? { queue: dq.value.trim(), maxReceiveCount: Number(mr.value) || 5 } : null;
          try {
            await api.updateQueue(name, attrs, mask);
            notice(`Updated ${name}`);
          } catch (e) {
            showError(e, "Update");
          }
          await refresh(true);
        },
      },
      h("label", { for: "edit-vt" }, "Visibility timeout"), vt,
      h("label", { for: "edit-retention" }, "Retention"), ret,
      h("label", { for: "edit-dlq" }, "Dead-letter queue"), dq,
      h("label", { for: "edit-max-receive" }, "Max receives"), mr,
      h("button", { type: "submit" }, "Save")));
  }

  async function purge(): Promise<void> {
    if (!(await confirmDialog(`Purge every message of ${name}?`, "Purge"))) return;
    try {
      await api.purgeQueue(name);
      notice(`Purged ${name}`);
    } catch (e) {
      showError(e, "Purge");
    }
    await Promise.all([refresh(), browse()]);
  }

  async function remove(): Promise<void> {
    if (!(await confirmDialog(`Delete queue ${name} and every message in it?`, "Delete"))) return;
    try {
      await api.deleteQueue(name);
      notice(`Deleted ${name}`);
      location.hash = "#/queues";
    } catch (e) {
      showError(e, "Delete");
    }
  }

  void findSources();
  void browse();
  const ratesTick = async () => {
    try {
      const hour = (await api.history(name, 360)).total ?? [];
      const r = rates(hour);
      msgs.update(r.t, [r.sent, r.received, r.deleted]);
      let sum = 0;
      for (const b of hour) sum += Number(b.sent);
      rateLine.textContent = `Now: ${fmtNum(lastRate(r.sent))} sent/s, ${fmtNum(lastRate(r.received))} received/s, ${fmtNum(lastRate(r.deleted))} deleted/s; ${sum} sent in the last hour (through this node).`;
    } catch (e) {
      rateLine.textContent = `Message rates: ${errorText(e)}`;
    }
  };

  const stops = [every(2000, () => refresh()), every(3000, ratesTick), every(5000, async () => {
    if (!msgsBox.querySelector("details[open]")) await browse(); // keep what the user opened
  })];
  return () => {
    stops.forEach((s) => s());
    depth.destroy();
    msgs.destroy();
  };
}

function stat(label: string, v: number, id: string): HTMLElement[] {
  return [h("dt", {}, label), h("dd", { "data-testid": id }, fmtNum(v))];
}

function preview(body: string): string {
  const one = body.replace(/\s+/g, " ");
  return one.length > 60 ? `${one.slice(0, 60)}…` : one || "(empty)";
}
