//go:build race

package store

// raceEnabled: the race detector slows apply about tenfold; tests that
// build a large state build a smaller one (their assertions do not depend
// on its size).
const raceEnabled = true
