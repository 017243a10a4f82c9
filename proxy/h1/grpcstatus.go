package h1

// gRPC's status on HTTP/1.1: a gRPC-Web answer (or gRPC over HTTP/1.1,
// where a peer speaks it) carries the call's status in grpc-status, in the
// response head (a trailers-only answer) or in a chunked body's trailer.
// The engine relays the field unchanged and records its value in
// Result.GRPCStatus, so the Router's metrics and spans label the call as
// the h2 engine's do.

const grpcStatusName = "grpc-status"

// maxGRPCStatus bounds what is kept of a malformed value (the metrics
// label it "other" anyway).
const maxGRPCStatus = 16

// grpcCodes are gRPC's status codes as strings, so that recording one of
// them allocates nothing.
var grpcCodes = [...]string{"0", "1", "2", "3", "4", "5", "6", "7", "8", "9", "10", "11", "12", "13", "14", "15", "16"}

func isGRPCStatus(name []byte) bool {
	return len(name) == len(grpcStatusName) && equalFold(name, grpcStatusName)
}

// grpcStatusString is v as a string: one of grpcCodes, or a copy.
func grpcStatusString(v []byte) string {
	switch {
	case len(v) == 1 && '0' <= v[0] && v[0] <= '9':
		return grpcCodes[v[0]-'0']
	case len(v) == 2 && v[0] == '1' && '0' <= v[1] && v[1] <= '6':
		return grpcCodes[10+v[1]-'0']
	}
	return string(v[:min(len(v), maxGRPCStatus)])
}

// grpcStatusOf is the value of the first grpc-status field, or "".
func grpcStatusOf(fields []Field) string {
	for i := range fields {
		if isGRPCStatus(fields[i].Name) {
			return grpcStatusString(fields[i].Value)
		}
	}
	return ""
}
