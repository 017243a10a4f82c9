package proxy

import "github.com/weftmesh/weft/pipeline"

// The mesh's own errors live with the request pipeline that decides them;
// these names keep package proxy's callers and tests as they were.
type MeshError = pipeline.MeshError

const (
	CodeUnknownService    = pipeline.CodeUnknownService
	CodeNoReadyInstances  = pipeline.CodeNoReadyInstances
	CodeConnectFailed     = pipeline.CodeConnectFailed
	CodeUpstreamTimeout   = pipeline.CodeUpstreamTimeout
	CodeUpstreamReset     = pipeline.CodeUpstreamReset
	CodeControlUnreach    = pipeline.CodeControlUnreach
	CodeDiscoveryTimeout  = pipeline.CodeDiscoveryTimeout
	CodeTooManyServices   = pipeline.CodeTooManyServices
	CodeBadRequest        = pipeline.CodeBadRequest
	CodeAppUnavailable    = pipeline.CodeAppUnavailable
	CodeUnsupported       = pipeline.CodeUnsupported
	CodeOverflow          = pipeline.CodeOverflow
	CodeRateLimited       = pipeline.CodeRateLimited
	CodeFaultInjected     = pipeline.CodeFaultInjected
	HeaderError           = pipeline.HeaderError
	HeaderSource          = "X-Weft-Source"
	tunnelAuthorityPrefix = "weft-tcp."
)
