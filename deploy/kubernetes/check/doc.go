// Package check renders the Kubernetes manifests of deploy/kubernetes with
// kustomize and decodes every object strictly into its Kubernetes API type,
// asserting what quorumq needs of them (see manifests_test.go). It is a
// module of its own so the Kubernetes and kustomize libraries stay out of
// quorumq's go.mod; `make test-deploy` runs it.
package check
