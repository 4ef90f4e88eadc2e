//go:build chaos

package node

// faultInjectionBuilt: this binary was built with -tags chaos, so
// Config.FaultInjection (`quorumq serve --fault-injection`) is accepted.
const faultInjectionBuilt = true
