//go:build linux

package capture

import (
	"encoding/binary"
	"errors"
	"fmt"
	"os"

	"github.com/google/nftables"
	"github.com/google/nftables/expr"
	"golang.org/x/sys/unix"
)

// Install replaces table weft (family ip) in the current network namespace
// with one nat output chain, through netlink:
//
//	table ip weft {
//	  chain output {
//	    type nat hook output priority -100; policy accept;
//	    meta l4proto != tcp return
//	    meta skuid EXCLUDE return
//	    ip daddr 127.0.0.0/8 return
//	    redirect to :PORT
//	  }
//	}
//
// It needs CAP_NET_ADMIN in the namespace; the error says so.
func Install(r Rules) error {
	if err := r.validate(); err != nil {
		return err
	}
	c, err := nftables.New()
	if err != nil {
		return explain(fmt.Errorf("netlink: %w", err))
	}
	t := &nftables.Table{Family: nftables.TableFamilyIPv4, Name: Table}
	// Add, delete, add: the table is replaced whether or not it existed,
	// in one transaction.
	c.AddTable(t)
	c.DelTable(t)
	c.AddTable(t)
	ch := c.AddChain(&nftables.Chain{Name: "output", Table: t, Type: nftables.ChainTypeNAT,
		Hooknum: nftables.ChainHookOutput, Priority: nftables.ChainPriorityNATDest})
	ret := &expr.Verdict{Kind: expr.VerdictReturn}
	uid := make([]byte, 4)
	binary.NativeEndian.PutUint32(uid, r.ExcludeUID)
	port := make([]byte, 2)
	binary.BigEndian.PutUint16(port, uint16(r.Port))
	for _, exprs := range [][]expr.Any{
		{&expr.Meta{Key: expr.MetaKeyL4PROTO, Register: 1},
			&expr.Cmp{Op: expr.CmpOpNeq, Register: 1, Data: []byte{unix.IPPROTO_TCP}}, ret},
		{&expr.Meta{Key: expr.MetaKeySKUID, Register: 1},
			&expr.Cmp{Op: expr.CmpOpEq, Register: 1, Data: uid}, ret},
		{&expr.Payload{DestRegister: 1, Base: expr.PayloadBaseNetworkHeader, Offset: 16, Len: 4},
			&expr.Bitwise{SourceRegister: 1, DestRegister: 1, Len: 4, Mask: []byte{255, 0, 0, 0}, Xor: []byte{0, 0, 0, 0}},
			&expr.Cmp{Op: expr.CmpOpEq, Register: 1, Data: []byte{127, 0, 0, 0}}, ret},
		{&expr.Immediate{Register: 1, Data: port},
			&expr.Redir{RegisterProtoMin: 1, Flags: unix.NF_NAT_RANGE_PROTO_SPECIFIED}},
	} {
		c.AddRule(&nftables.Rule{Table: t, Chain: ch, Exprs: exprs})
	}
	if err := c.Flush(); err != nil {
		return explain(fmt.Errorf("installing nftables table %s: %w", Table, err))
	}
	return nil
}

// Remove deletes table weft; no table is not an error.
func Remove() error {
	c, err := nftables.New()
	if err != nil {
		return explain(fmt.Errorf("netlink: %w", err))
	}
	t := &nftables.Table{Family: nftables.TableFamilyIPv4, Name: Table}
	c.AddTable(t) // so that deleting a missing table is not an error
	c.DelTable(t)
	if err := c.Flush(); err != nil {
		return explain(fmt.Errorf("removing nftables table %s: %w", Table, err))
	}
	return nil
}

// Installed reports whether table weft exists in this namespace.
func Installed() (bool, error) {
	c, err := nftables.New()
	if err != nil {
		return false, err
	}
	tables, err := c.ListTablesOfFamily(nftables.TableFamilyIPv4)
	if err != nil {
		return false, explain(err)
	}
	for _, t := range tables {
		if t.Name == Table {
			return true, nil
		}
	}
	return false, nil
}

func explain(err error) error {
	if errors.Is(err, unix.EPERM) || errors.Is(err, os.ErrPermission) {
		return fmt.Errorf("%w (changing nftables needs CAP_NET_ADMIN in the pod's network namespace: give it to this container, or run `weft capture` in an init container that has it)", err)
	}
	return err
}
