// Package server holds what quorumq's two serving tiers share: the API
// tier (server/router) that places and forwards calls, and the per-shard
// service (server/shardserver) that turns them into Raft commands. It has
// the wire between them (routing headers, the peer service's methods, the
// reply limits of every hop: wire.go), the error reasons and their mapping
// to gRPC statuses (errors.go, reasons.go), and caller authentication
// (auth.go, stream_auth.go, peerauth.go). server/node wires a process from
// these packages.
package server
