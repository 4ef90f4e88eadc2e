//go:build !chaos

package node

// faultInjectionBuilt: a production build refuses Config.FaultInjection;
// build with -tags chaos for fault tests.
const faultInjectionBuilt = false
