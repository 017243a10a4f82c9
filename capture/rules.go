package capture

import "fmt"

// Table is the nftables table (family ip) holding Weft's capture rules;
// Install replaces it, Remove deletes it, and nothing else is touched.
const Table = "weft"

// Rules are what Install puts in the network namespace: every new TCP
// connection from a local process whose uid is not ExcludeUID, to a
// non-loopback IPv4 address, is redirected to 127.0.0.1:Port.
type Rules struct {
	Port       int    // the capture listener's port
	ExcludeUID uint32 // the sidecar's uid: its own connections go out as they are
}

func (r Rules) validate() error {
	if r.Port <= 0 || r.Port > 65535 {
		return fmt.Errorf("capture port %d: not a port number", r.Port)
	}
	return nil
}
