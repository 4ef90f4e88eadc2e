// Overview: nodes and shards (GetCluster, cluster:admin), the Raft apply
// rate per shard and the messages stored in all queues, as live charts.

import { api, ApiError, type Cluster, type Queue } from "../api";
import { can } from "../auth";
import { lineChart } from "../charts";
import { errorText, fmtAge, fmtNum, h, num } from "../dom";
import { lastRate, rate, rates, record, series } from "../history";
import { every } from "../poll";

export function overviewPage(main: HTMLElement): () => void {
  const nodesBox = h("div", { class: "scroll", "data-testid": "nodes" });
  const shardsBox = h("div", { class: "scroll", "data-testid": "shards" });
  const clusterErr = h("p", { class: "error", "data-testid": "cluster-error", hidden: true });
  const applied = lineChart("Raft entries applied per second, by shard", [], "entries/s");
  const stored = lineChart("Messages stored, all queues", ["visible", "in flight", "delayed"], "messages");
  const msgs = lineChart("Messages per second (up to the last hour)", ["sent", "received", "deleted"], "msgs/s");
  const rateLine = h("p", { class: "summary", "data-testid": "rates" });
  const summary = h("p", { class: "summary", "data-testid": "summary" }, "Loading…");
  main.append(
    h("h1", {}, "Overview"),
    summary,
    rateLine,
    h("section", { class: "charts", "aria-label": "Rates" }, msgs.el, stored.el, applied.el),
    clusterErr,
    h("section", { "aria-labelledby": "h-nodes" }, h("h2", { id: "h-nodes" }, "Nodes"), nodesBox),
    h("section", { "aria-labelledby": "h-shards" }, h("h2", { id: "h-shards" }, "Shards"), shardsBox),
    h("p", { class: "hint" },
      "Message rates are the calls this node answered for clients (GET /v1/history: 10 s buckets, one hour, kept in " +
      "memory). Stored messages and Raft apply rates are sampled by this page while it is open."),
  );

  // leaders remembers each shard's leader, to point out a change for a
  // minute after the page saw it.
  const leaders = new Map<string, { leader: string; prev: string; at: number }>();

  const clusterTick = async () => {
    if (!can("cluster:admin")) {
      clusterErr.hidden = false;
      clusterErr.textContent = "The cluster view needs the cluster:admin scope.";
      nodesBox.replaceChildren();
      shardsBox.replaceChildren();
      return;
    }
    let c: Cluster;
    try {
      c = await api.cluster();
      clusterErr.hidden = true;
    } catch (e) {
      clusterErr.hidden = false;
      clusterErr.textContent = `Cluster: ${errorText(e)}`;
      return;
    }
    const now0 = Date.now();
    for (const sh of c.shards) {
      const seen = leaders.get(sh.id);
      const l = sh.leader ?? "0";
      if (l === "0") continue;
      if (!seen) leaders.set(sh.id, { leader: l, prev: "", at: 0 });
      else if (seen.leader !== l) leaders.set(sh.id, { leader: l, prev: seen.leader, at: now0 });
    }
    renderCluster(c, nodesBox, shardsBox, leaders, now0);
    const now = Date.now();
    for (const s of c.shards) record(`shard:${s.id}`, [num(s.appliedIndex)], now);
    const ids = c.shards.map((s) => s.id);
    const rs = ids.map((id) => rate(series(`shard:${id}`)));
    const t = rs.reduce((a, r) => (r.t.length > a.length ? r.t : a), [] as number[]);
    applied.update(t, rs.map((r) => align(t, r.t, r.r)), ids.map((id) => `shard ${id}`));
  };

  const queuesTick = async () => {
    let qs: Queue[];
    try {
      qs = await allQueues();
    } catch (e) {
      summary.textContent = `Queues: ${errorText(e)}`;
      return;
    }
    let vis = 0, fl = 0, del = 0;
    for (const q of qs) {
      vis += num(q.stats?.visible);
      fl += num(q.stats?.inFlight);
      del += num(q.stats?.delayed);
      record(`queue:${q.name}`, [num(q.stats?.visible), num(q.stats?.inFlight), num(q.stats?.delayed)]);
    }
    record("total", [vis, fl, del]);
    const s = series("total")!;
    stored.update(s.t, s.v);
    summary.textContent = `${qs.length} queue${qs.length === 1 ? "" : "s"}, ${fmtNum(vis + fl + del)} messages stored (${fmtNum(vis)} visible, ${fmtNum(fl)} in flight, ${fmtNum(del)} delayed).`;
  };

  const ratesTick = async () => {
    try {
      const r = rates((await api.history("", 360)).total ?? []);
      msgs.update(r.t, [r.sent, r.received, r.deleted]);
      rateLine.textContent = `Now: ${fmtNum(lastRate(r.sent))} sent/s, ${fmtNum(lastRate(r.received))} received/s, ${fmtNum(lastRate(r.deleted))} deleted/s.`;
    } catch (e) {
      rateLine.textContent = `Message rates: ${errorText(e)}`;
    }
  };

  const stops = [every(1000, clusterTick), every(2000, queuesTick), every(2000, ratesTick)];
  return () => {
    stops.forEach((s) => s());
    applied.destroy();
    stored.destroy();
    msgs.destroy();
  };
}

// align puts values sampled at ts onto the time axis t (null where absent).
function align(t: number[], ts: number[], vs: (number | null)[]): (number | null)[] {
  const m = new Map(ts.map((x, i) => [x, vs[i]]));
  return t.map((x) => m.get(x) ?? null);
}

// allQueues lists the tenant's queues (up to 200) with their stats.
export async function allQueues(limit = 200): Promise<Queue[]> {
  const names: string[] = [];
  let tok = "";
  do {
    const page = await api.listQueues(tok);
    names.push(...(page.queues ?? []).map((q) => q.name));
    tok = page.nextPageToken;
  } while (tok && names.length < limit);
  const out: Queue[] = [];
  // A few at a time: bounded load on the server, and one slow queue does
  // not hold the rest.
  for (let i = 0; i < Math.min(names.length, limit); i += 8) {
    const got = await Promise.all(names.slice(i, i + 8).map((n) => api.getQueue(n).catch((e: unknown) => {
      if (e instanceof ApiError && e.status === 404) return null; // deleted meanwhile
      throw e;
    })));
    out.push(...got.filter((q): q is Queue => q !== null));
  }
  return out;
}

function renderCluster(c: Cluster, nodesBox: HTMLElement, shardsBox: HTMLElement,
  leaders: Map<string, { leader: string; prev: string; at: number }>, now: number): void {
  const led = new Map<string, number>();
  for (const s of c.shards) if (s.leader && s.leader !== "0") led.set(s.leader, (led.get(s.leader) ?? 0) + 1);
  const maxLag = Math.max(0, ...c.shards.map((s) => num(s.commitIndex) - num(s.appliedIndex)));
  nodesBox.replaceChildren(
    h("table", {},
      h("caption", {}, `Answered by node ${c.nodeId} (${c.role})`),
      h("thead", {}, h("tr", {}, ...["Node", "Raft address", "Health", "Shards led", "Last contact"].map((x) => h("th", { scope: "col" }, x)))),
      h("tbody", {}, ...c.nodes.map((n) =>
        h("tr", { "data-node": n.id },
          h("td", {}, `${n.id}${n.self ? " (this node)" : ""}`),
          h("td", {}, n.raftAddress ?? ""),
          h("td", {}, h("span", { class: n.online ? "pill ok" : "pill bad" }, n.online ? "online" : "offline")),
          h("td", { "data-testid": "led" }, String(led.get(n.id) ?? 0)),
          h("td", {}, n.self ? "—" : fmtAge(n.lastContact))))),
    ),
    h("p", { class: "hint" }, `Apply lag on the answering node (commit − applied, worst shard): ${maxLag} entries.`),
  );
  shardsBox.replaceChildren(
    h("table", {},
      h("thead", {}, h("tr", {}, ...["Shard", "Role", "Replicas", "Leader", "Term", "Applied", "Commit"].map((x) => h("th", { scope: "col" }, x)))),
      h("tbody", {}, ...c.shards.map((s) =>
        h("tr", { "data-shard": s.id },
          h("td", {}, s.id),
          h("td", {}, s.role ?? ""),
          h("td", {}, (s.members ?? []).join(", ")),
          h("td", {}, h("span", { "data-testid": "leader" }, s.leader && s.leader !== "0" ? s.leader : h("span", { class: "pill bad" }, "none")),
            changed(leaders.get(s.id), now)),
          h("td", {}, s.term ?? ""),
          h("td", {}, s.appliedIndex ?? ""),
          h("td", {}, s.commitIndex ?? ""))))),
  );
}

// changed notes a leader change the page saw in the last minute.
function changed(l: { prev: string; at: number } | undefined, now: number): HTMLElement | null {
  if (!l || !l.at || now - l.at > 60000) return null;
  return h("span", { class: "pill warn", "data-testid": "leader-changed" }, ` was ${l.prev}, changed ${fmtAge(new Date(l.at).toISOString(), now)} ago`);
}
