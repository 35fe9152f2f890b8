package web

import (
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/gorilla/websocket"
)

// wsPair is a server-side wsConn over real loopback TCP, with a client
// that reads every frame and hands it to got.
type wsPair struct {
	c      *wsConn
	client *websocket.Conn
	got    chan []byte
	done   chan struct{}
}

func newWSPair(tb testing.TB, keep bool) *wsPair {
	tb.Helper()
	up := websocket.Upgrader{ReadBufferSize: wsReadBuffer, WriteBufferSize: wsWriteBuffer, WriteBufferPool: &sync.Pool{}}
	conns := make(chan *websocket.Conn, 1)
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		ws, err := up.Upgrade(w, r, nil)
		if err != nil {
			tb.Error(err)
			return
		}
		conns <- ws
	}))
	tb.Cleanup(srv.Close)
	client, _, err := websocket.DefaultDialer.Dial("ws"+strings.TrimPrefix(srv.URL, "http"), nil)
	if err != nil {
		tb.Fatal(err)
	}
	p := &wsPair{client: client, got: make(chan []byte, 1024), done: make(chan struct{})}
	p.c = &wsConn{rt: &realtime{writers: newWriterPool()}, ws: <-conns}
	go func() {
		defer close(p.done)
		if !keep { // the cheapest reader: the server side is what is measured
			_, _ = io.Copy(io.Discard, client.NetConn())
			return
		}
		for {
			typ, data, err := client.ReadMessage()
			if err != nil {
				return
			}
			if typ != websocket.TextMessage {
				tb.Errorf("frame type %d", typ)
			}
			p.got <- data
		}
	}()
	tb.Cleanup(func() { p.c.ws.Close(); client.Close(); <-p.done })
	return p
}

// queue puts frames on the connection's queue as push does, without
// scheduling a writer: the caller flushes.
func (p *wsPair) queue(fs ...*frame) {
	p.c.mu.Lock()
	p.c.queue = append(p.c.queue, fs...)
	p.c.scheduled = true
	p.c.mu.Unlock()
}

// BenchmarkWSFlush is a writer flushing a connection's queue to a real
// loopback socket: batch frames of an agent's message at a time, as a busy
// agent connection has them queued. "per-frame" is the path before write
// coalescing (one WriteMessage, one write(2), per frame), "coalesced" is
// flush (writeBatch: one write per queue); both run in the same run.
func BenchmarkWSFlush(b *testing.B) {
	m, c := benchMessage(1)
	f := *agentMessageFrame(m, c)
	f.msg = false // the same frame again and again: past the cursor filter
	for _, batch := range []int{1, 16, 64} {
		fs := make([]*frame, batch)
		for i := range fs {
			fs[i] = &f
		}
		b.Run(fmt.Sprintf("per-frame/batch=%d", batch), func(b *testing.B) {
			p := newWSPair(b, false)
			b.SetBytes(int64(len(f.data) * batch))
			b.ReportAllocs()
			for b.Loop() {
				p.c.wmu.Lock()
				for _, f := range fs {
					if err := p.c.write(f); err != nil {
						b.Fatal(err)
					}
				}
				p.c.wmu.Unlock()
			}
			b.ReportMetric(float64(b.Elapsed().Nanoseconds())/float64(b.N*batch), "ns/frame")
		})
		b.Run(fmt.Sprintf("coalesced/batch=%d", batch), func(b *testing.B) {
			p := newWSPair(b, false)
			b.SetBytes(int64(len(f.data) * batch))
			b.ReportAllocs()
			for b.Loop() {
				p.queue(fs...)
				p.c.flush()
			}
			if p.c.closed {
				b.Fatal("the connection failed")
			}
			b.ReportMetric(float64(b.Elapsed().Nanoseconds())/float64(b.N*batch), "ns/frame")
		})
	}
}

// TestFlushCoalesced: a queue written in one go arrives as the same frames,
// in order, whatever their length (the three header sizes of RFC 6455),
// without what the cursor filter drops; a failed write closes the
// connection and empties its queue.
func TestFlushCoalesced(t *testing.T) {
	p := newWSPair(t, true)
	p.c.filter = cursorFilter{agent: true, lastID: 10}
	long := strings.Repeat("x", 70000) // over 65535: 8-byte length
	mid := strings.Repeat("y", 300)    // 2-byte length
	fs := []*frame{
		{data: []byte(`{"type":"ping"}`)},
		{data: []byte(`{"n":"old"}`), msg: true, id: 9}, // at or before the cursor: dropped
		{data: []byte(`{"n":"` + mid + `"}`), msg: true, id: 11},
		{data: []byte(`{"n":"` + long + `"}`), msg: true, id: 12},
		{data: []byte(`{"n":"again"}`), msg: true, id: 12}, // a repeat: dropped
		{data: []byte(`{"n":"last"}`), msg: true, id: 13},
	}
	p.queue(fs...)
	p.c.flush()
	for _, i := range []int{0, 2, 3, 5} {
		select {
		case got := <-p.got:
			if string(got) != string(fs[i].data) {
				t.Fatalf("frame %d: got %.60s…, want %.60s…", i, got, fs[i].data)
			}
		case <-time.After(10 * time.Second):
			t.Fatalf("frame %d never arrived", i)
		}
	}
	if p.c.closed || p.c.scheduled || len(p.c.queue) != 0 {
		t.Fatalf("after flush: closed %v scheduled %v queue %d", p.c.closed, p.c.scheduled, len(p.c.queue))
	}

	// A connection being closed (closeWith) writes nothing more and is
	// marked closed, but is left open for closeWith's close frame.
	p.c.dying.Store(true)
	p.queue(&frame{data: []byte(`{"n":"after close"}`)})
	p.c.flush()
	if !p.c.closed || p.c.scheduled || p.c.queue != nil {
		t.Fatalf("dying: closed %v scheduled %v queue %v", p.c.closed, p.c.scheduled, p.c.queue)
	}
	closeFrame := websocket.FormatCloseMessage(closeSlowConsumer, codeSlowConsumer)
	if err := p.c.ws.WriteControl(websocket.CloseMessage, closeFrame, time.Now().Add(closeWait)); err != nil {
		t.Fatalf("the flush that saw the connection dying closed it: %v", err)
	}
	select {
	case got := <-p.got:
		t.Fatalf("a frame went out after close: %s", got)
	case <-p.done: // the client sees the connection end
	case <-time.After(10 * time.Second):
		t.Fatal("the connection did not end")
	}
}

func TestAppendWireFrame(t *testing.T) {
	for _, tc := range []struct {
		n    int
		head []byte
	}{
		{0, []byte{0x81, 0}},
		{125, []byte{0x81, 125}},
		{126, []byte{0x81, 126, 0, 126}},
		{65535, []byte{0x81, 126, 0xff, 0xff}},
		{65536, []byte{0x81, 127, 0, 0, 0, 0, 0, 1, 0, 0}},
	} {
		b := appendWireFrame([]byte("pre"), make([]byte, tc.n))
		if string(b[:3]) != "pre" || string(b[3:3+len(tc.head)]) != string(tc.head) || len(b) != 3+len(tc.head)+tc.n {
			t.Errorf("length %d: header % x, total %d", tc.n, b[3:3+len(tc.head)], len(b))
		}
	}
}

// TestLost: a failed socket write during hello is the client gone
// (errWSLost, logged at debug), a connection being closed stays
// errWSClosing, and no error stays none.
func TestLost(t *testing.T) {
	if err := lost(nil); err != nil {
		t.Errorf("lost(nil) = %v", err)
	}
	if err := lost(errWSClosing); err != errWSClosing {
		t.Errorf("lost(errWSClosing) = %v", err)
	}
	err := lost(io.ErrClosedPipe)
	if !errors.Is(err, errWSLost) || !errors.Is(err, io.ErrClosedPipe) {
		t.Errorf("lost(io.ErrClosedPipe) = %v: want both errWSLost and the cause", err)
	}
}
