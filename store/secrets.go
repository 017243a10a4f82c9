package store

import (
	bolt "go.etcd.io/bbolt"
)

var secretsBucket = []byte("secrets")

// GetSecret returns a named secret (the mesh CA's keys), nil when absent.
// Secrets live in the same bbolt file as resources, which is created 0600.
func (b *Bolt) GetSecret(name string) ([]byte, error) {
	var out []byte
	err := b.db.View(func(tx *bolt.Tx) error {
		if bk := tx.Bucket(secretsBucket); bk != nil {
			if v := bk.Get([]byte(name)); v != nil {
				out = append([]byte(nil), v...)
			}
		}
		return nil
	})
	return out, err
}

// PutSecret stores a named secret.
func (b *Bolt) PutSecret(name string, value []byte) error {
	return b.db.Update(func(tx *bolt.Tx) error {
		bk, err := tx.CreateBucketIfNotExists(secretsBucket)
		if err != nil {
			return err
		}
		return bk.Put([]byte(name), value)
	})
}
