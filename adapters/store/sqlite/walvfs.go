//go:build linux

package sqlite

import (
	"encoding/binary"
	"fmt"
	"sync"
	"sync/atomic"
	"unsafe"

	"modernc.org/libc"
	lib "modernc.org/sqlite/lib"
)

// The writer's connection opens the database through walVFS, SQLite's unix
// VFS with one change: the writes of a commit to the WAL file reach the
// kernel as one pwrite instead of two per page.
//
// SQLite appends a frame to the WAL as two writes, its 24-byte header and
// then the page, so a commit of 6 pages makes 12 pwrite calls; at a few
// messages per commit those calls were the largest single cost of a commit
// (BENCHMARKS.md, "Morning: one write per commit"). walVFS gathers a commit's contiguous writes
// in a buffer and writes them when the commit frame's page arrives (a frame
// header with a non-zero database size is the commit's last frame), before
// the write returns. Nothing is held past the commit: SQLite publishes the
// new frames to readers only after walFrames has written them all, and by
// then they are in the file, exactly as they would be without the buffer.
// Durability is unchanged: the same bytes reach the file in the same order
// before the same syncs.
//
// Any other use of the WAL file first writes what is buffered: a write that
// does not continue the buffer, a read, a sync, a truncation, a size query,
// a file control, a close. A commit frame's header written anywhere but
// where the last write ended (SQLite rewriting checksums in place, after a
// transaction too big for the page cache spilled frames and changed one of
// them again) is written at once: no page follows it. Spilled frames wait
// for the commit or the next read, and the buffer stays below walBufMax.
// Every other file (the database, the shared memory index) is the unix
// VFS's own, untouched.
const walVFSName = "kefu-unix-walbatch"

const (
	walFrameHeader = 24 // bytes of a WAL frame header
	// walBufMax is the most buffered before a write. The unix VFS's xWrite
	// takes at most 128 KB - 1 per call (seekAndWriteFd masks the length).
	walBufMax = 64 << 10
)

// walBuf is walVFS's state of an open WAL file, kept in C memory after the
// unix VFS's own file structure.
type walBuf struct {
	orig uintptr // the file's io methods, as the unix VFS opened it
	buf  uintptr // C memory, cap bytes
	cap  int64
	n    int64 // bytes buffered
	off  int64 // their offset in the file
	next int64 // the offset after the last write; -1 before the first
	page bool  // the last write was a commit frame's header
}

var (
	walVFSOnce sync.Once
	walVFSErr  error

	unixVFS     uintptr // the unix VFS (sqlite3_vfs*)
	walStateOff uintptr // offset of walBuf in walVFS's sqlite3_file

	walMethodsMu sync.Mutex
	unixMethods  uintptr // the io methods the unix VFS gives a WAL file
	walMethods   uintptr // walVFS's: unixMethods with the buffering wrappers

	// For tests: writes SQLite made to WAL files, and writes walVFS made.
	walWritesIn, walWritesOut atomic.Int64
)

// registerWALVFS registers walVFS once and returns its name.
func registerWALVFS() (string, error) {
	walVFSOnce.Do(func() {
		tls := libc.NewTLS()
		defer tls.Close()
		unixVFS = lib.Xsqlite3_vfs_find(tls, 0)
		if unixVFS == 0 {
			walVFSErr = fmt.Errorf("sqlite: no default VFS")
			return
		}
		unix := (*lib.Tsqlite3_vfs)(cptr(unixVFS))
		p := libc.Xcalloc(tls, 1, libc.Tsize_t(unsafe.Sizeof(lib.Tsqlite3_vfs{})))
		name, err := libc.CString(walVFSName)
		if p == 0 || err != nil {
			walVFSErr = fmt.Errorf("sqlite: register VFS: out of memory")
			return
		}
		v := (*lib.Tsqlite3_vfs)(cptr(p))
		*v = *unix
		v.FpNext = 0
		v.FzName = name
		walStateOff = (uintptr(unix.FszOsFile) + 7) &^ 7
		v.FszOsFile = int32(walStateOff + unsafe.Sizeof(walBuf{}))
		*fn[xOpen](&v.FxOpen) = walVFSOpen
		if rc := lib.Xsqlite3_vfs_register(tls, p, 0); rc != lib.SQLITE_OK {
			walVFSErr = fmt.Errorf("sqlite: register VFS: code %d", rc)
		}
	})
	return walVFSName, walVFSErr
}

// SQLite's function pointers as Go sees them: a C function pointer in
// modernc's SQLite is a Go func value.
type (
	xOpen        = func(tls *libc.TLS, pVfs, zName, pFile uintptr, flags int32, pOutFlags uintptr) int32
	xClose       = func(tls *libc.TLS, pFile uintptr) int32
	xReadWrite   = func(tls *libc.TLS, pFile, zBuf uintptr, iAmt int32, iOfst int64) int32
	xTruncate    = func(tls *libc.TLS, pFile uintptr, size int64) int32
	xSync        = func(tls *libc.TLS, pFile uintptr, flags int32) int32
	xFileSize    = func(tls *libc.TLS, pFile, pSize uintptr) int32
	xFileControl = func(tls *libc.TLS, pFile uintptr, op int32, pArg uintptr) int32
)

// fn views the function pointer at p as a Go func of type F.
func fn[F any](p *uintptr) *F { return (*F)(unsafe.Pointer(p)) }

// cptr turns an address in SQLite's memory, which is not Go's (the
// collector neither moves nor frees it), into a pointer.
func cptr(p uintptr) unsafe.Pointer { return *(*unsafe.Pointer)(unsafe.Pointer(&p)) }

func walState(pFile uintptr) *walBuf { return (*walBuf)(cptr(pFile + walStateOff)) }

// walVFSOpen opens a file with the unix VFS and, for a WAL file, puts the
// buffering methods in front of the unix ones.
func walVFSOpen(tls *libc.TLS, _, zName, pFile uintptr, flags int32, pOutFlags uintptr) int32 {
	open := (*lib.Tsqlite3_vfs)(cptr(unixVFS)).FxOpen
	rc := (*fn[xOpen](&open))(tls, unixVFS, zName, pFile, flags, pOutFlags)
	if rc != lib.SQLITE_OK || flags&lib.SQLITE_OPEN_WAL == 0 {
		return rc
	}
	f := (*lib.Tsqlite3_file)(cptr(pFile))
	m := walMethodsFor(tls, f.FpMethods)
	if m == 0 {
		return rc // not the methods the wrappers were built on: leave the file as it is
	}
	*walState(pFile) = walBuf{orig: f.FpMethods, next: -1}
	f.FpMethods = m
	return rc
}

// walMethodsFor returns walVFS's io methods for a file the unix VFS opened
// with orig, built from the first such file; 0 if orig differs from it.
func walMethodsFor(tls *libc.TLS, orig uintptr) uintptr {
	walMethodsMu.Lock()
	defer walMethodsMu.Unlock()
	if walMethods != 0 {
		if orig != unixMethods {
			return 0
		}
		return walMethods
	}
	if orig == 0 {
		return 0
	}
	p := libc.Xcalloc(tls, 1, libc.Tsize_t(unsafe.Sizeof(lib.Tsqlite3_io_methods{})))
	if p == 0 {
		return 0
	}
	m := (*lib.Tsqlite3_io_methods)(cptr(p))
	*m = *(*lib.Tsqlite3_io_methods)(cptr(orig))
	*fn[xClose](&m.FxClose) = walClose
	*fn[xReadWrite](&m.FxRead) = walRead
	*fn[xReadWrite](&m.FxWrite) = walWrite
	*fn[xTruncate](&m.FxTruncate) = walTruncate
	*fn[xSync](&m.FxSync) = walSync
	*fn[xFileSize](&m.FxFileSize) = walFileSize
	*fn[xFileControl](&m.FxFileControl) = walFileControl
	unixMethods, walMethods = orig, p
	return walMethods
}

func (b *walBuf) methods() *lib.Tsqlite3_io_methods {
	return (*lib.Tsqlite3_io_methods)(cptr(b.orig))
}

func (b *walBuf) write(tls *libc.TLS, pFile, zBuf uintptr, iAmt int32, iOfst int64) int32 {
	walWritesOut.Add(1)
	return (*fn[xReadWrite](&b.methods().FxWrite))(tls, pFile, zBuf, iAmt, iOfst)
}

// flush writes what is buffered. The buffer is empty afterwards, written or
// not: a failed write fails the transaction that made it, and SQLite ignores
// frames past the last commit it recorded.
func (b *walBuf) flush(tls *libc.TLS, pFile uintptr) int32 {
	if b.n == 0 {
		return lib.SQLITE_OK
	}
	n := b.n
	b.n = 0
	return b.write(tls, pFile, b.buf, int32(n), b.off)
}

func walWrite(tls *libc.TLS, pFile, zBuf uintptr, iAmt int32, iOfst int64) int32 {
	walWritesIn.Add(1)
	b := walState(pFile)
	data := unsafe.Slice((*byte)(cptr(zBuf)), iAmt)
	follows := iOfst == b.next // this write continues the one before
	b.next = iOfst + int64(iAmt)
	page := b.page && follows // the page of the commit frame whose header came last
	header := iAmt == walFrameHeader && binary.BigEndian.Uint32(data[4:8]) != 0
	b.page = header
	if header && !follows {
		// Not an append: SQLite rewriting a header in place. Nothing
		// may wait for a page that will not come.
		if rc := b.flush(tls, pFile); rc != lib.SQLITE_OK {
			return rc
		}
		return b.write(tls, pFile, zBuf, iAmt, iOfst)
	}
	if b.n > 0 && (iOfst != b.off+b.n || b.n+int64(iAmt) > walBufMax) {
		if rc := b.flush(tls, pFile); rc != lib.SQLITE_OK {
			return rc
		}
	}
	if b.n+int64(iAmt) > b.cap && (int64(iAmt) > walBufMax || !b.grow(tls, b.n+int64(iAmt))) {
		if rc := b.flush(tls, pFile); rc != lib.SQLITE_OK {
			return rc
		}
		return b.write(tls, pFile, zBuf, iAmt, iOfst)
	}
	if b.n == 0 {
		b.off = iOfst
	}
	copy(unsafe.Slice((*byte)(cptr(b.buf+uintptr(b.n))), iAmt), data)
	b.n += int64(iAmt)
	if page {
		return b.flush(tls, pFile) // the commit is complete
	}
	return lib.SQLITE_OK
}

// grow makes room for n bytes; false if the memory is not there.
func (b *walBuf) grow(tls *libc.TLS, n int64) bool {
	c := max(b.cap*2, 16<<10)
	for c < n {
		c *= 2
	}
	p := libc.Xrealloc(tls, b.buf, libc.Tsize_t(c))
	if p == 0 {
		return false
	}
	b.buf, b.cap = p, c
	return true
}

func walRead(tls *libc.TLS, pFile, zBuf uintptr, iAmt int32, iOfst int64) int32 {
	b := walState(pFile)
	if rc := b.flush(tls, pFile); rc != lib.SQLITE_OK {
		return rc
	}
	return (*fn[xReadWrite](&b.methods().FxRead))(tls, pFile, zBuf, iAmt, iOfst)
}

func walTruncate(tls *libc.TLS, pFile uintptr, size int64) int32 {
	b := walState(pFile)
	if rc := b.flush(tls, pFile); rc != lib.SQLITE_OK {
		return rc
	}
	return (*fn[xTruncate](&b.methods().FxTruncate))(tls, pFile, size)
}

func walSync(tls *libc.TLS, pFile uintptr, flags int32) int32 {
	b := walState(pFile)
	if rc := b.flush(tls, pFile); rc != lib.SQLITE_OK {
		return rc
	}
	return (*fn[xSync](&b.methods().FxSync))(tls, pFile, flags)
}

func walFileSize(tls *libc.TLS, pFile, pSize uintptr) int32 {
	b := walState(pFile)
	if rc := b.flush(tls, pFile); rc != lib.SQLITE_OK {
		return rc
	}
	return (*fn[xFileSize](&b.methods().FxFileSize))(tls, pFile, pSize)
}

func walFileControl(tls *libc.TLS, pFile uintptr, op int32, pArg uintptr) int32 {
	b := walState(pFile)
	if rc := b.flush(tls, pFile); rc != lib.SQLITE_OK {
		return rc
	}
	return (*fn[xFileControl](&b.methods().FxFileControl))(tls, pFile, op, pArg)
}

func walClose(tls *libc.TLS, pFile uintptr) int32 {
	b := walState(pFile)
	rc := b.flush(tls, pFile)
	if b.buf != 0 {
		libc.Xfree(tls, b.buf)
	}
	closeFile := *fn[xClose](&b.methods().FxClose)
	*b = walBuf{}
	if crc := closeFile(tls, pFile); rc == lib.SQLITE_OK {
		rc = crc
	}
	return rc
}
