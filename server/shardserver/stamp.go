package shardserver

import (
	"google.golang.org/protobuf/encoding/protowire"
)

// Apply time follows the stamps in log order (store.applyTime): a stamp
// behind apply time still moves it by half the step from the previous
// stamp. Stamps read at Propose are not in log order: the consume class
// goes first in each Raft round (raftnode.takeRound), so a receive stamped
// now is appended ahead of sends stamped earlier, and every round
// credited the span of the waiting sends again, running apply time ahead
// of the clock (leases, delays and retention ended early). The leader
// therefore stamps each command again as Raft appends it (Stamp, called in
// log order), so one leader's stamps never go backwards. Replicas of any
// version apply the same log bytes by the same rule, so nothing diverges.

// Stamp implements raftnode.Stamper: it moves the command's time_ms to
// the leader's clock now.
func (m *stateMachine) Stamp(data []byte) {
	restamp(data, m.srv.cfg.Now().UnixMilli())
}

// timeMsField is storepb.Command's time_ms field number.
const timeMsField = 2

// restamp rewrites a marshaled storepb.Command's time_ms in place to now,
// if now is later and encodes in the same number of bytes (every Unix
// millisecond time from 1971 to 2109 takes 6). It reports whether it
// rewrote; a payload it cannot parse is left as it is (apply judges it).
func restamp(data []byte, now int64) bool {
	for off := 0; off < len(data); {
		num, typ, n := protowire.ConsumeTag(data[off:])
		if n < 0 {
			return false
		}
		off += n
		if num == timeMsField && typ == protowire.VarintType {
			v, size := protowire.ConsumeVarint(data[off:])
			if size < 0 || now <= int64(v) || protowire.SizeVarint(uint64(now)) != size {
				return false
			}
			protowire.AppendVarint(data[off:off], uint64(now))
			return true
		}
		n = protowire.ConsumeFieldValue(num, typ, data[off:])
		if n < 0 {
			return false
		}
		off += n
	}
	return false
}
