// Package openapi holds the generated OpenAPI (Swagger 2.0) description of the
// REST API. `make generate` rewrites quorumq.swagger.json; the gateway serves it
// at /openapi.json with info.version set to the binary's version and the
// /healthz and /readyz routes added (gateway/openapi.go).
package openapi

import _ "embed"

// Spec is the OpenAPI document of the QueueService REST mapping.
//
//go:embed quorumq.swagger.json
var Spec []byte
