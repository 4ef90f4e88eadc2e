// Error details of quorumq: every failed call carries a google.rpc.ErrorInfo
// (domain "quorumq.dev") in grpc-status-details-bin. Connect decodes the
// google.rpc.Status wrapper and leaves each detail as {type, value}; the
// ErrorInfo is decoded here with the protobuf wire reader, so the SDK needs no
// copy of googleapis' google/rpc protos.
import { BinaryReader, WireType } from "@bufbuild/protobuf/wire";
import { Code, ConnectError } from "@connectrpc/connect";

/** google.rpc.ErrorInfo (fields 1 reason, 2 domain, 3 metadata). */
export interface ErrorInfo {
  reason: string;
  domain: string;
  metadata: Record<string, string>;
}

const errorInfoType = "google.rpc.ErrorInfo";

/** Decodes the wire bytes of a google.rpc.ErrorInfo. Throws on malformed input. */
export function decodeErrorInfo(bytes: Uint8Array): ErrorInfo {
  const info: ErrorInfo = { reason: "", domain: "", metadata: {} };
  const r = new BinaryReader(bytes);
  while (r.pos < r.len) {
    const [field, wireType] = r.tag();
    if (field === 1 && wireType === WireType.LengthDelimited) {
      info.reason = r.string();
    } else if (field === 2 && wireType === WireType.LengthDelimited) {
      info.domain = r.string();
    } else if (field === 3 && wireType === WireType.LengthDelimited) {
      // map<string, string> entry: key = 1, value = 2.
      const entry = new BinaryReader(r.bytes());
      let key = "";
      let value = "";
      while (entry.pos < entry.len) {
        const [f, wt] = entry.tag();
        if (f === 1 && wt === WireType.LengthDelimited) key = entry.string();
        else if (f === 2 && wt === WireType.LengthDelimited) value = entry.string();
        else entry.skip(wt, f);
      }
      info.metadata[key] = value;
    } else {
      r.skip(wireType, field);
    }
  }
  return info;
}

/**
 * The ErrorInfo of a failed call, or undefined when the error is not a
 * ConnectError or carries none (for example a transport failure).
 */
export function errorInfo(err: unknown): ErrorInfo | undefined {
  if (!(err instanceof ConnectError)) return undefined;
  for (const d of err.details) {
    if ("type" in d && "value" in d && d.type === errorInfoType) {
      try {
        return decodeErrorInfo(d.value);
      } catch {
        return undefined;
      }
    }
  }
  return undefined;
}

/** The ErrorInfo reason of a failed call ("QUEUE_NOT_FOUND", ...), or undefined. */
export function errorReason(err: unknown): string | undefined {
  return errorInfo(err)?.reason;
}

/** The gRPC status code of a failed call, or undefined for non-RPC errors. */
export function errorCode(err: unknown): Code | undefined {
  return err instanceof ConnectError ? err.code : undefined;
}
