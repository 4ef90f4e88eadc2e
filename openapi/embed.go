// Package openapi holds the generated OpenAPI (Swagger 2.0) description of the
// REST API. `make generate` rewrites quorumq.swagger.json; the gateway serves it
// at /openapi.json.
package openapi

import _ "embed"

// Spec is the OpenAPI document of the QueueService REST mapping.
//
//go:embed quorumq.swagger.json
var Spec []byte
