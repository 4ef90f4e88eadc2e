package store

import (
	"errors"
	"fmt"

	"github.com/quorumq/quorumq/internal/keys"
	storepb "github.com/quorumq/quorumq/store/storepb/v1"
)

// Group membership lives in the memory of the group's coordinator (see
// DESIGN.md, "Consumer group membership"); what is replicated is, per
// partition, the owner the coordinator last assigned it to (member and
// generation it got it in, in the group's offset record). A commit or read
// naming a member is refused unless that member owns the partition since
// that generation or earlier, so two members never both commit one partition, whatever
// the coordinator's state.

// ErrMemberFenced: a group member read or committed a partition it does
// not own, or named a generation older than its ownership.
var ErrMemberFenced = errors.New("member does not own the partition in this generation")

// fenceTopicGroup records the partition's owner in the group.
func (t *txn) fenceTopicGroup(op *storepb.FenceTopicGroup, res *Result, tr *TopicResult) error {
	sl, err := t.readGroup(op, res, tr)
	if sl == nil || err != nil {
		return err
	}
	if !sl.found {
		res.Err = fmt.Errorf("%w: %s", ErrGroupNotFound, op.Group)
		return nil
	}
	g := sl.rec
	g.OwnerMember, g.OwnerGeneration = op.Member, op.Generation
	tr.GroupOffset = g.Offset
	return t.set(sl.key, g)
}

// groupOp names a group on one partition copy.
type groupOp interface {
	GetTenant() string
	GetTopic() string
	GetPartition() int32
	GetIncarnation() int64
	GetGroup() string
}

// groupSlot is a group's record on a live partition copy: key is where it
// is stored, found whether the group exists there.
type groupSlot struct {
	part  *storepb.TopicPartitionRecord
	key   []byte
	rec   *storepb.TopicGroupRecord
	found bool
}

// readGroup checks op's group name and reads the group's record on the
// live partition copy op names. A nil slot with a nil error means the
// command's answer is set already (res.Err).
func (t *txn) readGroup(op groupOp, res *Result, tr *TopicResult) (*groupSlot, error) {
	part, err := t.livePartition(op.GetTenant(), op.GetTopic(), op.GetPartition(), op.GetIncarnation(), res, tr)
	if part == nil || err != nil {
		return nil, err
	}
	if err := validateName("group", op.GetGroup()); err != nil {
		res.Err = err
		return nil, nil
	}
	sl := &groupSlot{part: part, key: keys.TopicGroup(t.s.shard, part.Id, op.GetGroup()), rec: &storepb.TopicGroupRecord{}}
	if sl.found, err = t.get(sl.key, sl.rec); err != nil {
		return nil, err
	}
	return sl, nil
}

// checkOwner is nil when member is empty (a call outside membership) or
// owns the group's partition and gen is not older than the generation it
// was given the partition in (a delayed commit of an earlier ownership is
// refused).
func checkOwner(g *storepb.TopicGroupRecord, member string, gen int64) error {
	if member == "" || (g.OwnerMember == member && gen >= g.OwnerGeneration) {
		return nil
	}
	return fmt.Errorf("%w (generation %d)", ErrMemberFenced, gen)
}

// TopicGroupOwned is nil when member (non-empty) owns the group's
// partition p at generation gen (checkOwner); ErrMemberFenced, ErrGroupNotFound or
// ErrTopicNotFound otherwise.
func (s *Store) TopicGroupOwned(tenant, topic string, p int32, group, member string, gen int64) error {
	t := s.reader(0)
	part, err := t.partition(tenant, topic, p)
	if err != nil {
		return err
	}
	if part == nil {
		return ErrTopicNotFound
	}
	g := &storepb.TopicGroupRecord{}
	found, err := t.get(keys.TopicGroup(s.shard, part.Id, group), g)
	if err != nil {
		return err
	}
	if !found {
		return fmt.Errorf("%w: %s", ErrGroupNotFound, group)
	}
	return checkOwner(g, member, gen)
}
