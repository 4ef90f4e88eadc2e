// decodeErrorInfo against bytes written by the protobuf wire writer: fields
// in any order, a map, and unknown fields skipped.
import { test } from "node:test";
import assert from "node:assert/strict";
import { BinaryWriter, WireType } from "@bufbuild/protobuf/wire";
import { Code, ConnectError } from "@connectrpc/connect";
import { decodeErrorInfo, errorReason } from "../index.js";

function errorInfoBytes(): Uint8Array {
  const w = new BinaryWriter();
  w.tag(2, WireType.LengthDelimited).string("quorumq.dev");
  w.tag(9, WireType.Varint).int32(7); // unknown field
  w.tag(3, WireType.LengthDelimited).fork().tag(1, WireType.LengthDelimited).string("queue").tag(2, WireType.LengthDelimited).string("jobs").join();
  w.tag(1, WireType.LengthDelimited).string("QUEUE_NOT_FOUND");
  return w.finish();
}

test("decodeErrorInfo reads reason, domain and metadata", () => {
  assert.deepEqual(decodeErrorInfo(errorInfoBytes()), {
    reason: "QUEUE_NOT_FOUND",
    domain: "quorumq.dev",
    metadata: { queue: "jobs" },
  });
});

test("errorReason finds the ErrorInfo among the details", () => {
  // As the gRPC transport leaves details it received: {type, value}.
  const err = new ConnectError("queue not found", Code.NotFound);
  err.details = [
    { type: "google.rpc.BadRequest", value: new Uint8Array() },
    { type: "google.rpc.ErrorInfo", value: errorInfoBytes() },
  ];
  assert.equal(errorReason(err), "QUEUE_NOT_FOUND");
  assert.equal(errorReason(new Error("plain")), undefined);
  // Malformed detail bytes: no reason rather than a throw.
  const bad = new ConnectError("x", Code.Internal);
  bad.details = [{ type: "google.rpc.ErrorInfo", value: new Uint8Array([0x0a, 0x05]) }];
  assert.equal(errorReason(bad), undefined);
});
