// Package servertest starts in-process quorumq nodes and clusters on
// loopback for the external tests of the API tier (server/router) and of
// the shard service (server/shardserver), and holds the small call and
// check helpers both use. Only tests import it.
package servertest
