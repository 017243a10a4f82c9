// Package store persists the resources users apply. The control plane is its
// only client: it writes a whole manifest in one transaction and keeps its own
// in-memory view, so the interface is small enough to be backed later by etcd
// or the Kubernetes API for high availability.
package store

import (
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"time"

	bolt "go.etcd.io/bbolt"

	"github.com/weftmesh/weft/resource"
)

// Store holds resource objects keyed by kind and name.
type Store interface {
	// List returns every stored object, ordered by kind then name.
	List() ([]resource.Object, error)
	// Apply creates or replaces objs in one transaction and reports, per
	// object, "created", "configured" or "unchanged". check sees the whole
	// would-be state before anything is written; an error from it aborts.
	Apply(objs []resource.Object, check func(all []resource.Object) error) ([]string, error)
	// Delete removes refs in one transaction; a missing ref is ErrNotFound
	// and nothing is removed.
	Delete(refs []resource.Ref) error
	Close() error
}

// ErrNotFound is returned for an object that does not exist.
var ErrNotFound = errors.New("not found")

var bucket = []byte("resources")

// Bolt is a Store in a bbolt file under a data directory.
type Bolt struct{ db *bolt.DB }

var _ Store = (*Bolt)(nil)

// OpenBolt opens (creating if needed) dir/weft.db. It fails fast with a clear
// error when another control plane holds the file.
func OpenBolt(dir string) (*Bolt, error) {
	if err := os.MkdirAll(dir, 0o750); err != nil {
		return nil, fmt.Errorf("data dir: %w", err)
	}
	path := filepath.Join(dir, "weft.db")
	db, err := bolt.Open(path, 0o600, &bolt.Options{Timeout: 2 * time.Second})
	if err != nil {
		if errors.Is(err, bolt.ErrTimeout) {
			return nil, fmt.Errorf("open %s: locked by another control plane", path)
		}
		return nil, fmt.Errorf("open %s: %w", path, err)
	}
	if err := db.Update(func(tx *bolt.Tx) error {
		_, err := tx.CreateBucketIfNotExists(bucket)
		return err
	}); err != nil {
		db.Close()
		return nil, fmt.Errorf("open %s: %w", path, err)
	}
	return &Bolt{db: db}, nil
}

func key(r resource.Ref) []byte { return []byte(r.Kind + "/" + r.Name) }

// List implements Store.
func (b *Bolt) List() ([]resource.Object, error) {
	var out []resource.Object
	err := b.db.View(func(tx *bolt.Tx) error {
		return tx.Bucket(bucket).ForEach(func(k, v []byte) error {
			var o resource.Object
			if err := json.Unmarshal(v, &o); err != nil {
				return fmt.Errorf("stored object %s: %w", k, err)
			}
			out = append(out, o)
			return nil
		})
	})
	return out, err
}

// Apply implements Store.
func (b *Bolt) Apply(objs []resource.Object, check func(all []resource.Object) error) ([]string, error) {
	results := make([]string, len(objs))
	err := b.db.Update(func(tx *bolt.Tx) error {
		bk := tx.Bucket(bucket)
		next := map[resource.Ref]resource.Object{}
		var order []resource.Ref
		if err := bk.ForEach(func(k, v []byte) error {
			var o resource.Object
			if err := json.Unmarshal(v, &o); err != nil {
				return err
			}
			next[o.Ref()] = o
			order = append(order, o.Ref())
			return nil
		}); err != nil {
			return err
		}
		for i := range objs {
			o := objs[i]
			old, exists := next[o.Ref()]
			switch {
			case !exists:
				results[i] = "created"
				o.Metadata.Generation = 1
				order = append(order, o.Ref())
			case sameContent(old, o):
				results[i] = "unchanged"
				o.Metadata.Generation = old.Metadata.Generation
			default:
				results[i] = "configured"
				o.Metadata.Generation = old.Metadata.Generation + 1
			}
			objs[i] = o
			next[o.Ref()] = o
		}
		if check != nil {
			all := make([]resource.Object, 0, len(order))
			for _, r := range order {
				all = append(all, next[r])
			}
			if err := check(all); err != nil {
				return err
			}
		}
		for i := range objs {
			if results[i] == "unchanged" {
				continue
			}
			v, err := json.Marshal(objs[i])
			if err != nil {
				return err
			}
			if err := bk.Put(key(objs[i].Ref()), v); err != nil {
				return err
			}
		}
		return nil
	})
	if err != nil {
		return nil, err
	}
	return results, nil
}

func sameContent(a, b resource.Object) bool {
	a.Metadata.Generation, b.Metadata.Generation = 0, 0
	ja, _ := json.Marshal(a)
	jb, _ := json.Marshal(b)
	return string(ja) == string(jb)
}

// Delete implements Store.
func (b *Bolt) Delete(refs []resource.Ref) error {
	return b.db.Update(func(tx *bolt.Tx) error {
		bk := tx.Bucket(bucket)
		for _, r := range refs {
			if bk.Get(key(r)) == nil {
				return fmt.Errorf("%s: %w", r, ErrNotFound)
			}
			if err := bk.Delete(key(r)); err != nil {
				return err
			}
		}
		return nil
	})
}

// Close implements Store.
func (b *Bolt) Close() error { return b.db.Close() }
