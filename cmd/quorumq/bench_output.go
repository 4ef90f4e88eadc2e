package main

import (
	"encoding/json"
	"fmt"
	"io"
	"sort"
	"strings"
)

// writeBenchDocument prints the result as one JSON line (-o json) or a
// YAML document (-o yaml).
func writeBenchDocument(w io.Writer, format outputFormat, res *benchResult) error {
	b, err := json.Marshal(res)
	if err != nil {
		return err
	}
	if format == outputYAML {
		return writeDocument(w, format, b)
	}
	_, err = fmt.Fprintln(w, string(b))
	return err
}

func writeBenchText(w io.Writer, res *benchResult) error {
	c := res.Config
	loop := "closed loop"
	if res.Mode == "open" {
		loop = fmt.Sprintf("open loop at %.0f msgs/s", c.Rate)
	}
	fmt.Fprintf(w, "queue %s: %d producers × %d in flight, batch %d, %d consumers (receive %d), %d B, %s\n",
		c.Queue, c.Producers, c.Inflight, c.Batch, c.Consumers, c.ReceiveBatch, c.Size, loop)
	fmt.Fprintf(w, "sent      %10d msgs in %6.2fs  %10.1f msgs/s  (failed %d)\n", res.Sent, res.SendElapsed, res.SentPerSec, res.SendFailed)
	fmt.Fprintf(w, "received  %10d msgs in %6.2fs  %10.1f msgs/s  (deleted %d, %.1f/s; drained %v)\n",
		res.Received, res.ReceiveElapsed, res.ReceivedPerSec, res.Deleted, res.DeletedPerSec, res.Drained)
	for _, l := range []struct {
		name string
		s    latencySummary
	}{{"send latency", res.SendLatency}, {"end-to-end  ", res.EndToEndLatency}} {
		fmt.Fprintf(w, "%s ms  p50 %8.2f  p90 %8.2f  p99 %8.2f  p99.9 %8.2f  max %8.2f  (n=%d)\n",
			l.name, l.s.P50, l.s.P90, l.s.P99, l.s.P999, l.s.Max, l.s.Count)
	}
	if len(res.Errors) == 0 {
		_, err := fmt.Fprintln(w, "errors    none")
		return err
	}
	codes := make([]string, 0, len(res.Errors))
	for k := range res.Errors {
		codes = append(codes, k)
	}
	sort.Strings(codes)
	parts := make([]string, len(codes))
	for i, k := range codes {
		parts[i] = fmt.Sprintf("%s=%d", k, res.Errors[k])
	}
	_, err := fmt.Fprintf(w, "errors    %s\n", strings.Join(parts, " "))
	return err
}
