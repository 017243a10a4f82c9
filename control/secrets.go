package control

import (
	"crypto/rand"
	"encoding/hex"

	"github.com/weftmesh/weft/store"
)

// storedSecret is the random secret kept in the store under name, made on
// first use, so that what sidecars were given survives a restart (the
// embedded broker's password, the OTLP receiver's token). Without a bolt
// store (tests) it is made afresh.
func (s *Server) storedSecret(name string) (string, error) {
	b, ok := s.store.(*store.Bolt)
	var v []byte
	if ok {
		var err error
		if v, err = b.GetSecret(name); err != nil {
			return "", err
		}
	}
	if len(v) == 0 {
		var r [24]byte
		_, _ = rand.Read(r[:])
		v = []byte(hex.EncodeToString(r[:]))
		if ok {
			if err := b.PutSecret(name, v); err != nil {
				return "", err
			}
		}
	}
	return string(v), nil
}
