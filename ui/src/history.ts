// History for the charts, from two sources. Message rates come from the
// node (GET /v1/history: counts per 10 s for an hour, see rates below).
// Gauges the API has no history of (queue depths from GetQueue, Raft
// applied indexes from GetCluster) are sampled by the page while it is
// open, up to an hour, and turned into rates between successive samples.

export const maxAgeMs = 3600 * 1000;

export interface Series {
  t: number[]; // unix seconds
  v: number[][]; // one array per value
}

const store = new Map<string, Series>();

// record appends a sample of n values under key (a queue, a shard).
export function record(key: string, values: number[], now = Date.now()): void {
  let s = store.get(key);
  if (!s) {
    s = { t: [], v: values.map(() => []) };
    store.set(key, s);
  }
  const t = now / 1000;
  if (s.t.length && t - s.t[s.t.length - 1] < 0.5) return; // two pollers at once
  s.t.push(t);
  values.forEach((x, i) => (s!.v[i] ??= []).push(x));
  const cut = (now - maxAgeMs) / 1000;
  let drop = 0;
  while (drop < s.t.length && s.t[drop] < cut) drop++;
  if (drop) {
    s.t.splice(0, drop);
    s.v.forEach((a) => a.splice(0, drop));
  }
}

export function series(key: string): Series | undefined {
  return store.get(key);
}

// rate turns a counter series (value index i) into per-second rates at each
// sample after the first; a counter that went back (a restart, a purge)
// gives no point rather than a negative rate.
export function rate(s: Series | undefined, i = 0): { t: number[]; r: (number | null)[] } {
  const t: number[] = [];
  const r: (number | null)[] = [];
  if (!s) return { t, r };
  for (let k = 1; k < s.t.length; k++) {
    const dt = s.t[k] - s.t[k - 1];
    const dv = s.v[i][k] - s.v[i][k - 1];
    t.push(s.t[k]);
    r.push(dt > 0 && dv >= 0 ? dv / dt : null);
  }
  return { t, r };
}


// Rates is a message history (GET /v1/history) as per-second rates at the
// end of each bucket: sent, received, deleted. The current bucket counts
// only once two seconds of it have passed (less is noise). Leading idle
// buckets are dropped, keeping at least keep buckets, so the chart spans
// the traffic there was rather than an hour of zeros.
export interface Rates {
  t: number[];
  sent: number[];
  received: number[];
  deleted: number[];
}

export function rates(buckets: { start: string; length: string; sent: string; received: string; deleted: string }[], keep = 30): Rates {
  const out: Rates = { t: [], sent: [], received: [], deleted: [] };
  let first = buckets.findIndex((b) => Number(b.sent) + Number(b.received) + Number(b.deleted) > 0);
  if (first < 0) first = buckets.length;
  for (const b of buckets.slice(Math.max(0, Math.min(first, buckets.length - keep)))) {
    const secs = parseFloat(b.length);
    if (!(secs >= 2)) continue;
    out.t.push(Date.parse(b.start) / 1000 + secs);
    out.sent.push(Number(b.sent) / secs);
    out.received.push(Number(b.received) / secs);
    out.deleted.push(Number(b.deleted) / secs);
  }
  return out;
}

// lastRate is the latest rate of a series (0 if none).
export function lastRate(xs: number[]): number {
  return xs.length ? xs[xs.length - 1] : 0;
}
