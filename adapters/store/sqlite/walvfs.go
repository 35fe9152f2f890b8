//go:build linux

package sqlite

import (
	"fmt"
	"sync"
	"sync/atomic"
	"unsafe"

	"modernc.org/libc"
	lib "modernc.org/sqlite/lib"
)

// The writer's connection opens the database through walVFS, SQLite's unix
// VFS with one change: a WAL frame reaches the file in one pwrite, not two.
//
// SQLite appends a frame to the WAL as two writes, its 24-byte header and
// then the page (walWriteOneFrame), so a commit of 6 pages made 12 pwrite
// calls; at a few messages per commit those calls were the largest single
// cost of a commit (BENCHMARKS.md, "Early morning"). walVFS holds a 24-byte
// write (a frame header) that starts where the file's previous call, a
// write, ended, until the next call on the file: in SQLite that is always
// the frame's page, and the two go out together. A 24-byte write after any
// other call, or anywhere else, is written at once: SQLite rewriting
// checksums in place, or the piece after the sync when it splits a padding
// frame around one (psow=0 with synchronous=FULL). Nothing is held longer
// than one call, and any other call first writes the held header. A failure
// is the failure of the frame's own write, as without walVFS, and the same
// bytes reach the file in the same order before the same syncs. Holding a
// whole commit's frames saved a little more (61 µs a commit against 72 µs)
// but kept writes pending across calls, where an error or a rollback could
// lose them; two independent reviews showed how.
// Every other file (the database, the shared memory index) is the unix
// VFS's own, untouched.
const walVFSName = "kefu-unix-walframe"

const walFrameHeader = 24 // bytes of a WAL frame header

// walBuf is walVFS's state of an open WAL file, kept in C memory after the
// unix VFS's own file structure.
type walBuf struct {
	orig uintptr // the file's io methods, as the unix VFS opened it
	buf  uintptr // C memory, cap bytes: a held frame header, then its page
	cap  int64
	held bool  // buf starts with a frame header not yet written
	off  int64 // the header's offset in the file
	next int64 // the offset after the last write; -1 before the first
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
	// For tests: while not 0, walVFS's writes from this number on (counted
	// by walWritesOut) fail as on a full disk.
	walFailFrom atomic.Int64
)

// registerWALVFS registers walVFS once and returns its name.
func registerWALVFS() (string, error) {
	walVFSOnce.Do(func() {
		tls := libc.NewTLS()
		defer tls.Close()
		zUnix, err := libc.CString("unix")
		if err != nil {
			walVFSErr = fmt.Errorf("sqlite: register VFS: %w", err)
			return
		}
		unixVFS = lib.Xsqlite3_vfs_find(tls, zUnix)
		libc.Xfree(tls, zUnix)
		if unixVFS == 0 {
			walVFSErr = fmt.Errorf("sqlite: no unix VFS")
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
	if n := walWritesOut.Add(1); n >= walFailFrom.Load() && walFailFrom.Load() != 0 {
		return lib.SQLITE_FULL
	}
	return (*fn[xReadWrite](&b.methods().FxWrite))(tls, pFile, zBuf, iAmt, iOfst)
}

// flush writes the held header, if any. Called before anything but the
// page that follows it: SQLite does not make such a call, so this only
// keeps walVFS safe should it ever start to.
func (b *walBuf) flush(tls *libc.TLS, pFile uintptr) int32 {
	if !b.held {
		return lib.SQLITE_OK
	}
	b.held = false
	if rc := b.write(tls, pFile, b.buf, walFrameHeader, b.off); rc != lib.SQLITE_OK {
		// Reported by a call that is not the header's write: as an I/O
		// error, which fails the transaction. (SQLITE_FULL from a read
		// would fail only the statement.)
		return lib.SQLITE_IOERR_WRITE
	}
	return lib.SQLITE_OK
}

func walWrite(tls *libc.TLS, pFile, zBuf uintptr, iAmt int32, iOfst int64) int32 {
	walWritesIn.Add(1)
	b := walState(pFile)
	follows := iOfst == b.next // this write starts where the last one ended
	b.next = iOfst + int64(iAmt)
	if b.held {
		if follows && b.grow(tls, walFrameHeader+int64(iAmt)) {
			// The held header's page: both in one write.
			b.held = false
			copy(unsafe.Slice((*byte)(cptr(b.buf+walFrameHeader)), iAmt), unsafe.Slice((*byte)(cptr(zBuf)), iAmt))
			return b.write(tls, pFile, b.buf, walFrameHeader+iAmt, b.off)
		}
		if rc := b.flush(tls, pFile); rc != lib.SQLITE_OK {
			return rc
		}
	}
	if iAmt == walFrameHeader && follows && b.grow(tls, walFrameHeader) {
		// A frame appended: its page comes next.
		*(*[walFrameHeader]byte)(cptr(b.buf)) = *(*[walFrameHeader]byte)(cptr(zBuf))
		b.held, b.off = true, iOfst
		return lib.SQLITE_OK
	}
	return b.write(tls, pFile, zBuf, iAmt, iOfst)
}

// grow makes room for n bytes; false if the memory is not there.
func (b *walBuf) grow(tls *libc.TLS, n int64) bool {
	if n <= b.cap {
		return true
	}
	c := max(b.cap*2, 4<<10)
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

// before readies the file for a call other than a write: the held header
// goes out first, and the write that follows the call is not its page.
func (b *walBuf) before(tls *libc.TLS, pFile uintptr) int32 {
	b.next = -1
	return b.flush(tls, pFile)
}

func walRead(tls *libc.TLS, pFile, zBuf uintptr, iAmt int32, iOfst int64) int32 {
	b := walState(pFile)
	if rc := b.before(tls, pFile); rc != lib.SQLITE_OK {
		return rc
	}
	return (*fn[xReadWrite](&b.methods().FxRead))(tls, pFile, zBuf, iAmt, iOfst)
}

func walTruncate(tls *libc.TLS, pFile uintptr, size int64) int32 {
	b := walState(pFile)
	if rc := b.before(tls, pFile); rc != lib.SQLITE_OK {
		return rc
	}
	return (*fn[xTruncate](&b.methods().FxTruncate))(tls, pFile, size)
}

func walSync(tls *libc.TLS, pFile uintptr, flags int32) int32 {
	b := walState(pFile)
	if rc := b.before(tls, pFile); rc != lib.SQLITE_OK {
		return rc
	}
	return (*fn[xSync](&b.methods().FxSync))(tls, pFile, flags)
}

func walFileSize(tls *libc.TLS, pFile, pSize uintptr) int32 {
	b := walState(pFile)
	if rc := b.before(tls, pFile); rc != lib.SQLITE_OK {
		return rc
	}
	return (*fn[xFileSize](&b.methods().FxFileSize))(tls, pFile, pSize)
}

func walFileControl(tls *libc.TLS, pFile uintptr, op int32, pArg uintptr) int32 {
	b := walState(pFile)
	if rc := b.before(tls, pFile); rc != lib.SQLITE_OK {
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
