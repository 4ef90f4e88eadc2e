// The console's only way to the server: the public REST API (grpc-gateway),
// with the bearer token from the login field. Every call is bounded in time.

import { token } from "./auth";

export interface ApiErrorBody {
  code?: number;
  message?: string;
  details?: { "@type"?: string; reason?: string; domain?: string }[];
}

// ApiError is a refused or failed call: HTTP status, the google.rpc reason
// (ErrorInfo) and the server's message, shown to the user as they are.
export class ApiError extends Error {
  constructor(
    readonly status: number,
    readonly reason: string,
    message: string,
  ) {
    super(message);
    this.name = "ApiError";
  }
  // text is what the page shows: "PERMISSION_DENIED (403): token lacks scope …".
  text(): string {
    const r = this.reason ? `${this.reason} ` : "";
    return `${r}(${this.status || "network"}): ${this.message}`;
  }
}

const timeoutMs = 15000;

export async function call<T>(method: string, path: string, body?: unknown): Promise<T> {
  const headers: Record<string, string> = { Accept: "application/json" };
  const tok = token();
  if (tok) headers.Authorization = `Bearer ${tok}`;
  if (body !== undefined) headers["Content-Type"] = "application/json";
  const ctl = new AbortController();
  const timer = setTimeout(() => ctl.abort(), timeoutMs);
  let resp: Response;
  try {
    resp = await fetch(path, {
      method,
      headers,
      body: body === undefined ? undefined : JSON.stringify(body),
      signal: ctl.signal,
      cache: "no-store",
    });
  } catch (e) {
    throw new ApiError(0, "UNREACHABLE", ctl.signal.aborted ? `no answer in ${timeoutMs / 1000}s` : String(e));
  } finally {
    clearTimeout(timer);
  }
  const text = await resp.text();
  let data: unknown = undefined;
  try {
    data = text ? JSON.parse(text) : {};
  } catch {
    data = undefined;
  }
  if (!resp.ok) {
    const b = (data ?? {}) as ApiErrorBody;
    const info = b.details?.find((d) => d.reason);
    throw new ApiError(resp.status, info?.reason ?? "", b.message ?? (text.trim() || resp.statusText));
  }
  return data as T;
}

export const enc = encodeURIComponent;

// Shapes of the REST answers the console reads (protojson, lowerCamelCase;
// int64 arrive as strings).
export interface QueueAttributes {
  visibilityTimeout?: string;
  messageRetention?: string;
  deliveryDelay?: string;
  receiveWait?: string;
  maxMessageSize?: string;
  deadLetter?: { queue?: string; maxReceiveCount?: number } | null;
  fifo?: boolean;
  contentBasedDeduplication?: boolean;
  partitions?: number;
}
export interface Queue {
  name: string;
  attributes?: QueueAttributes;
  tags?: Record<string, string>;
  createdAt?: string;
  stats?: { visible?: string; inFlight?: string; delayed?: string } | null;
  partitionShards?: string[];
}
export interface PeekedMessage {
  messageId: string;
  body: string;
  attributes?: Record<string, string>;
  tags?: string[];
  sentAt?: string;
  receiveCount?: number;
  firstReceivedAt?: string | null;
  visibleAt?: string | null;
  state?: string;
  groupId?: string;
  sequence?: string;
  deadLetterSource?: string;
  partition?: number;
}
export interface ClusterNode {
  id: string;
  raftAddress?: string;
  self?: boolean;
  online?: boolean;
  lastContact?: string | null;
}
export interface ClusterShard {
  id: string;
  members?: string[];
  leader?: string;
  term?: string;
  appliedIndex?: string;
  commitIndex?: string;
  firstIndex?: string;
  lastIndex?: string;
  role?: string;
}
export interface Cluster {
  nodeId: string;
  nodes: ClusterNode[];
  shards: ClusterShard[];
  role: string;
}
export interface TenantQuota {
  maxQueues?: string;
  maxSendRate?: string;
  maxStoredBytes?: string;
}
export interface TenantQuotaResponse {
  quota?: TenantQuota | null;
  usage?: { queues?: string; storedBytes?: string } | null;
}

export interface HistoryBucket {
  start: string;
  length: string; // "10s", "3.2s"
  sent: string;
  received: string;
  deleted: string;
}
export interface MessageHistory {
  nodeId: string;
  interval: string;
  total: HistoryBucket[];
  queues: { queue: string; buckets: HistoryBucket[] }[];
}

export const api = {
  history: (queue = "", points = 0, perQueue = false) =>
    call<MessageHistory>("GET", `/v1/history?queue=${enc(queue)}&points=${points}&perQueue=${perQueue}`),
  listQueues: (pageToken = "") =>
    call<{ queues: Queue[]; nextPageToken: string }>(
      "GET",
      `/v1/queues?pageSize=100${pageToken ? `&pageToken=${enc(pageToken)}` : ""}`,
    ),
  getQueue: (name: string) => call<Queue>("GET", `/v1/queues/${enc(name)}`),
  createQueue: (name: string, attributes: QueueAttributes) =>
    call<Queue>("POST", "/v1/queues", { name, attributes }),
  updateQueue: (name: string, attributes: QueueAttributes, mask: string[]) =>
    call<Queue>("PATCH", `/v1/queues/${enc(name)}?updateMask=${enc(mask.join(","))}`, attributes),
  deleteQueue: (name: string) => call<unknown>("DELETE", `/v1/queues/${enc(name)}`),
  purgeQueue: (name: string) => call<unknown>("POST", `/v1/queues/${enc(name)}:purge`, {}),
  send: (queue: string, body: string, attributes?: Record<string, string>) =>
    call<{ messageId: string }>("POST", `/v1/queues/${enc(queue)}/messages`, { body, attributes }),
  peek: (queue: string, pageSize = 50, pageToken = "") =>
    call<{ messages: PeekedMessage[]; nextPageToken: string }>(
      "GET",
      `/v1/queues/${enc(queue)}/messages?pageSize=${pageSize}${pageToken ? `&pageToken=${enc(pageToken)}` : ""}`,
    ),
  redrive: (dlq: string, maxMessages: number) =>
    call<{ moved: string }>("POST", `/v1/queues/${enc(dlq)}:redrive`, { maxMessages }),
  cluster: () => call<Cluster>("GET", "/v1/cluster"),
  getQuota: (tenant: string) => call<TenantQuotaResponse>("GET", `/v1/tenants/${enc(tenant)}/quota`),
  setQuota: (tenant: string, quota: TenantQuota) =>
    call<TenantQuotaResponse>("PUT", `/v1/tenants/${enc(tenant)}/quota`, quota),
};
