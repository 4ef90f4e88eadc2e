// Package router is quorumq's stateless API tier: it serves the client
// services (queues, topics, credentials, cluster), places each call on the
// shard of its queue partition or topic partition, and runs it on the local
// shard service (server/shardserver) when this node leads that shard, or
// forwards it to the leader otherwise (Forwarder, over the peer listener).
// The shard views (LocalView, MemberView, RemoteView) say who leads; the
// peer service (PeerServer) serves what other nodes ask of this one beyond
// Raft.
package router
