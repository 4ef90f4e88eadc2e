// A small typed client for quorumq over gRPC (HTTP/2) from Node. The
// generated service clients stay reachable (queues, cluster) for every RPC
// the helpers below do not cover.
import { create, type MessageInitShape } from "@bufbuild/protobuf";
import { durationFromMs, timestampDate } from "@bufbuild/protobuf/wkt";
import { createClient, type Client, type Interceptor, type Transport } from "@connectrpc/connect";
import { createGrpcTransport } from "@connectrpc/connect-node";
import {
  NackKind,
  QueueService,
  QueueAttributesSchema,
  type Queue,
  type ReceivedMessage,
  type SendMessageResponse,
} from "./gen/quorumq/v1/queue_pb.js";
import { ClusterService } from "./gen/quorumq/v1/cluster_pb.js";

export interface ClientOptions {
  /** gRPC listener, e.g. "http://127.0.0.1:9090" (plaintext) or "https://q.example:9090". */
  baseUrl: string;
  /** JWT sent as "authorization: Bearer <token>"; omit against a dev-mode server. */
  token?: string;
  /** A transport of your own (TLS options, interceptors); baseUrl and token are then ignored. */
  transport?: Transport;
}

export interface SendOptions {
  attributes?: Record<string, string>;
  tags?: string[];
  delayMs?: number;
  /** FIFO queues: the ordering group and the deduplication id. */
  groupId?: string;
  deduplicationId?: string;
  idempotencyKey?: string;
  /** Time to live from the send (default: the queue's messageTtl). */
  ttlMs?: number;
  /** 0 (lowest) – 9 (highest); unset: 4. A receive takes the highest first. */
  priority?: number;
}

export interface NackOptions {
  /** Released: given back unprocessed, not counted toward maxReceiveCount, visible at once. Default: failed. */
  released?: boolean;
  /** Visible again after this long instead of the kind's rule (e.g. a Retry-After). */
  redeliverAfterMs?: number;
}

export interface ReceiveOptions {
  maxMessages?: number;
  visibilityTimeoutMs?: number;
  /** Long poll: how long the server may wait for a first message. */
  waitTimeMs?: number;
  signal?: AbortSignal;
}

export interface QuorumqClient {
  readonly queues: Client<typeof QueueService>;
  readonly cluster: Client<typeof ClusterService>;
  createQueue(name: string, attributes?: MessageInitShape<typeof QueueAttributesSchema>): Promise<Queue>;
  send(queue: string, body: string, opts?: SendOptions): Promise<SendMessageResponse>;
  receive(queue: string, opts?: ReceiveOptions): Promise<ReceivedMessage[]>;
  delete(queue: string, receiptHandle: string): Promise<void>;
  /** Ends a lease early as failed (the queue's retry backoff applies) or released; resolves to when the message is visible again. */
  nack(queue: string, receiptHandle: string, opts?: NackOptions): Promise<Date | undefined>;
  deleteQueue(name: string): Promise<void>;
}

function bearer(token: string): Interceptor {
  return (next) => (req) => {
    req.header.set("authorization", `Bearer ${token}`);
    return next(req);
  };
}

export function createQuorumqClient(opts: ClientOptions): QuorumqClient {
  const transport =
    opts.transport ??
    createGrpcTransport({
      baseUrl: opts.baseUrl,
      interceptors: opts.token ? [bearer(opts.token)] : [],
    });
  const queues = createClient(QueueService, transport);
  const cluster = createClient(ClusterService, transport);
  return {
    queues,
    cluster,
    async createQueue(name, attributes) {
      const res = await queues.createQueue({
        name,
        attributes: attributes ? create(QueueAttributesSchema, attributes) : undefined,
      });
      if (!res.queue) throw new Error(`quorumq: CreateQueue(${name}) answered without a queue`);
      return res.queue;
    },
    send(queue, body, o = {}) {
      return queues.sendMessage({
        queue,
        body,
        attributes: o.attributes ?? {},
        tags: o.tags ?? [],
        delay: o.delayMs !== undefined ? durationFromMs(o.delayMs) : undefined,
        groupId: o.groupId ?? "",
        deduplicationId: o.deduplicationId ?? "",
        idempotencyKey: o.idempotencyKey ?? "",
        ttl: o.ttlMs !== undefined ? durationFromMs(o.ttlMs) : undefined,
        priority: o.priority,
      });
    },
    async receive(queue, o = {}) {
      const res = await queues.receiveMessages(
        {
          queue,
          maxMessages: o.maxMessages ?? 1,
          visibilityTimeout: o.visibilityTimeoutMs !== undefined ? durationFromMs(o.visibilityTimeoutMs) : undefined,
          waitTime: o.waitTimeMs !== undefined ? durationFromMs(o.waitTimeMs) : undefined,
        },
        { signal: o.signal },
      );
      return res.messages;
    },
    async delete(queue, receiptHandle) {
      await queues.deleteMessage({ queue, receiptHandle });
    },
    async nack(queue, receiptHandle, o = {}) {
      const res = await queues.nackMessage({
        queue,
        receiptHandle,
        kind: o.released ? NackKind.RELEASED : NackKind.FAILED,
        redeliverDelay: o.redeliverAfterMs !== undefined ? durationFromMs(o.redeliverAfterMs) : undefined,
      });
      return res.visibleAt ? timestampDate(res.visibleAt) : undefined;
    },
    async deleteQueue(name) {
      await queues.deleteQueue({ name });
    },
  };
}
