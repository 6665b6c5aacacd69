// Package api embeds the service's published contracts: the OpenAPI document
// of the HTTP API and the AsyncAPI document of the Engine protocol.
package api

import _ "embed"

// OpenAPI is api/openapi.yaml, served at /openapi.yaml.
//
//go:embed openapi.yaml
var OpenAPI []byte

// AsyncAPI is api/asyncapi.yaml.
//
//go:embed asyncapi.yaml
var AsyncAPI []byte
