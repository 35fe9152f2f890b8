//go:build !unix

package sqlite

// lockFile is the database's lock (lock.go); elsewhere than on Unix there
// is none, and one process per database is up to the operator.
type lockFile struct{}

func lockDB(string) (*lockFile, error) { return nil, nil }

func (l *lockFile) release() error { return nil }
