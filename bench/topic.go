package main

import (
	"context"
	"fmt"
	"strconv"
)

// topicVsQueue is scenario (g), issue 20's publish target: Publish to a
// topic with one subscription against SendMessage to a queue, same
// settings as (a) (1 KiB, batch 10, 8 producers + 8 consumers, one
// partition each), in interleaved rounds so that both see the same
// machine; the ratio is of the sums over the rounds.
func (s *suite) topicVsQueue(ctx context.Context, rounds int) error {
	d := s.c.duration.String()
	common := []string{"--size", "1024", "--duration", d, "--drain-timeout", d, "--batch", "10",
		"--producers", "8", "--consumers", "8"}
	var sent, published, recvQ, recvT float64
	var ratios []string
	for i := range rounds {
		create := []string{}
		if i == 0 {
			create = []string{"--create"}
		}
		q, err := s.bench(ctx, fmt.Sprintf("g-send-%d", i+1), append(append(common, create...), "--queue", "sg")...)
		if err != nil {
			return err
		}
		t, err := s.bench(ctx, fmt.Sprintf("g-publish-%d", i+1), append(append(common, create...), "--queue", "sgt", "--topic", "tg")...)
		if err != nil {
			return err
		}
		sent, published = sent+q.SentPerSec, published+t.SentPerSec
		recvQ, recvT = recvQ+q.DeletedPerSec, recvT+t.DeletedPerSec
		ratios = append(ratios, strconv.FormatFloat(t.SentPerSec/max(q.SentPerSec, 1), 'f', 2, 64))
		s.rows = append(s.rows,
			row{fmt.Sprintf("(g) round %d: send to a queue", i+1), q, ""},
			row{fmt.Sprintf("(g) round %d: publish, 1 subscription", i+1), t, ratio("publish/send", t.SentPerSec, q.SentPerSec)})
	}
	s.notes = append(s.notes, fmt.Sprintf("(g) publish/send over %d rounds: %s sent/s (rounds %v), %s recv+del/s",
		rounds, ratio("", published, sent), ratios, ratio("", recvT, recvQ)))
	return nil
}
