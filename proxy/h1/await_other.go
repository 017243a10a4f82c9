//go:build !unix

package h1

func (uc *upConn) rawWriteAwait(p []byte) (int, error) { return uc.nc.Write(p) }

func (uc *upConn) awaitWrite(uintptr) bool { return true }
