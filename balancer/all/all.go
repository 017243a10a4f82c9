// Package all registers every load balancing algorithm Weft ships with
// (round_robin, random, modulo, consistent_hash, least_request, load_aware).
// cmd/weft and the sidecar import it for its side effects only:
//
//	import _ "github.com/weftmesh/weft/balancer/all"
package all

import (
	_ "github.com/weftmesh/weft/balancer/consistenthash" // consistent_hash
	_ "github.com/weftmesh/weft/balancer/leastrequest"   // least_request
	_ "github.com/weftmesh/weft/balancer/loadaware"      // load_aware
	_ "github.com/weftmesh/weft/balancer/modulo"         // modulo
	_ "github.com/weftmesh/weft/balancer/random"         // random
	_ "github.com/weftmesh/weft/balancer/roundrobin"     // round_robin
)
