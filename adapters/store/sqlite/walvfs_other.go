//go:build !linux

package sqlite

// registerWALVFS: walVFS (walvfs.go) is built on Linux only; elsewhere the
// writer uses SQLite's default VFS.
func registerWALVFS() (string, error) { return "", nil }
