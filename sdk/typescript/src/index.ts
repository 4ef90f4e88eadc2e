export * from "./client.js";
export * from "./errors.js";
export * from "./gen/quorumq/v1/queue_pb.js";
export * from "./gen/quorumq/v1/cluster_pb.js";
export { Code, ConnectError } from "@connectrpc/connect";
