package wire

import (
	"context"
	"crypto/cipher"
	"errors"
	"fmt"
	"net"
	"sync"
	"time"
)

// Conn carries config stream messages over a stream connection: in clear
// until the handshake (Handshake, AcceptHello), sealed after it. One
// goroutine may read while others write: reads are serialized by one lock,
// writes by another. After ReadMessage or WriteMessage fails with anything
// but ErrUnknownType (a complete frame of a type this code does not know,
// which was consumed and may be skipped), the stream is out of step: close
// the Conn.
//
// A controller holds one Conn per agent, so an idle Conn is kept small: it
// reads with a FrameReader's small buffer (a frame header, or a small
// frame whole) and borrows a pooled buffer for a larger body only while it
// reads and decodes it; WriteMessage borrows its frame buffer the same way.
type Conn struct {
	nc net.Conn

	rmu   sync.Mutex
	fr    FrameReader
	rwait ctxWatch
	open  *frameSealer // after the handshake: opens the frames read

	wmu      sync.Mutex
	maxWrite int
	wsize    int // size of the last frame written: the buffer to borrow next
	wwait    ctxWatch
	seal     *frameSealer // after the handshake: seals the frames written
}

// NewConn wraps c. maxFrame bounds the frames read and written (type byte
// plus body; DefaultMaxFrame if <= 0). A controller reads the Hello with a
// small limit and raises it with SetMaxFrame once the Hello verifies.
func NewConn(c net.Conn, maxFrame int) *Conn {
	if maxFrame <= 0 {
		maxFrame = DefaultMaxFrame
	}
	wc := &Conn{nc: c, maxWrite: maxFrame}
	wc.fr.r = c
	wc.fr.SetMaxFrame(maxFrame)
	wc.rwait.init(c, false)
	wc.wwait.init(c, true)
	return wc
}

// SetMaxFrame changes the limit on frames read from now on.
func (c *Conn) SetMaxFrame(maxFrame int) {
	c.rmu.Lock()
	c.fr.SetMaxFrame(maxFrame)
	c.rmu.Unlock()
}

// ReadMessage reads and decodes the next message. It blocks until a message
// arrives, ctx is done (then it returns ctx's error, wrapped) or the
// connection fails. At a clean end of stream it returns io.EOF.
func (c *Conn) ReadMessage(ctx context.Context) (Message, error) {
	c.rmu.Lock()
	defer c.rmu.Unlock()
	if err := c.rwait.start(ctx); err != nil {
		return nil, err
	}
	t, body, err := c.fr.Next()
	c.rwait.end()
	if err == nil && c.open != nil {
		body, err = c.open.open(t, body)
	}
	if err != nil {
		c.fr.release()
		return nil, c.rwait.ioError(ctx, err)
	}
	m, err := DecodeMessage(t, body)
	c.fr.release() // the message holds no reference to body
	return m, err
}

// WriteMessage encodes m as one frame and writes it with a single Write on
// the connection (the frame is assembled in a buffer borrowed from a pool
// for the call). It fails with ErrTooLarge, before writing anything, if
// the frame exceeds the limit; it gives up when ctx is done.
func (c *Conn) WriteMessage(ctx context.Context, m Message) error {
	c.wmu.Lock()
	defer c.wmu.Unlock()
	size := c.wsize
	if d, ok := m.(*Delta); ok {
		// A snapshot follows the small frames of the handshake: borrow a
		// buffer of its size class rather than outgrow a small one (a
		// new allocation per snapshot, as many as hosts in a cold start).
		size = max(size, deltaFrameSize(d))
	}
	bp := getBuf(size)
	defer putBuf(bp)
	limit := c.maxWrite
	if c.seal != nil {
		limit -= SealOverhead
	}
	b, err := AppendMessage((*bp)[:0], m, limit)
	if err == nil && c.seal != nil {
		b, err = c.seal.seal(b, 0)
	}
	*bp = b[:0] // b may have outgrown the buffer borrowed
	if err != nil {
		return err
	}
	c.wsize = len(b)
	if err := c.wwait.start(ctx); err != nil {
		return err
	}
	_, err = c.nc.Write(b)
	c.wwait.end()
	if err != nil {
		return c.wwait.ioError(ctx, fmt.Errorf("wire: write %v frame: %w", m.FrameType(), err))
	}
	return nil
}

// secure makes the Conn seal what it writes with send and open what it
// reads with recv, from the next frame on.
func (c *Conn) secure(send, recv cipher.AEAD) {
	c.wmu.Lock()
	c.seal = &frameSealer{aead: send}
	c.wmu.Unlock()
	c.rmu.Lock()
	c.open = &frameSealer{aead: recv}
	c.rmu.Unlock()
}

// Close closes the connection; a blocked ReadMessage or WriteMessage
// returns.
func (c *Conn) Close() error {
	err := c.nc.Close()
	c.rwait.close()
	c.wwait.close()
	return err
}

// LocalAddr returns the local address of the connection.
func (c *Conn) LocalAddr() net.Addr { return c.nc.LocalAddr() }

// RemoteAddr returns the remote address of the connection.
func (c *Conn) RemoteAddr() net.Addr { return c.nc.RemoteAddr() }

// ctxWatch applies a context's deadline and cancellation to one direction
// (reads or writes) of a connection: start sets the connection deadline
// from ctx's and makes ctx's cancellation unblock the I/O (by moving the
// deadline to the past), end and ioError follow the I/O.
//
// Registering a context.AfterFunc costs allocations, so a registration is
// kept after the I/O when the caller passes the same context (the same
// Done channel) as in the previous call: a reader that loops on
// ReadMessage(ctx) registers once, not per message. A context used once
// (a timeout per write) is unregistered at the end of its call, as
// before. A context without a Done channel needs no registration, and the
// deadline is set only when it changes.
//
// The methods other than close are called with the direction's lock
// (Conn.rmu or Conn.wmu) held; close may run at any time.
type ctxWatch struct {
	nc    net.Conn
	write bool

	dl    time.Time // the deadline the connection has, if dlSet
	dlSet bool      // (dl, dlSet, lastDone and keep: only with the lock of the direction)

	// lastDone is the Done channel of the previous call's context: a
	// second call with it keeps the registration.
	lastDone <-chan struct{}
	keep     bool

	mu     sync.Mutex // guards the registration against close
	done   <-chan struct{}
	stop   func() bool
	fired  sync.WaitGroup // the callback of the registration in place, while it runs
	fire   func()         // the callback, made once
	closed bool
}

func (w *ctxWatch) init(nc net.Conn, write bool) {
	w.nc, w.write = nc, write
	w.fire = func() {
		defer w.fired.Done()
		w.setDeadline(time.Unix(1, 0)) // in the past: unblock the I/O now
	}
}

func (w *ctxWatch) setDeadline(t time.Time) error {
	if w.write {
		return w.nc.SetWriteDeadline(t)
	}
	return w.nc.SetReadDeadline(t)
}

// start prepares the connection for I/O under ctx. It fails, wrapping
// ctx's error, if ctx is already done.
func (w *ctxWatch) start(ctx context.Context) error {
	if err := ctx.Err(); err != nil {
		return fmt.Errorf("wire: %w", err)
	}
	done := ctx.Done()
	w.keep = done != nil && done == w.lastDone
	w.lastDone = done
	w.mu.Lock()
	if done != w.done {
		if w.unregisterLocked() {
			w.dlSet = false
		}
		if done != nil && !w.closed {
			w.fired.Add(1)
			w.stop = context.AfterFunc(ctx, w.fire)
			w.done = done
		}
	}
	w.mu.Unlock()
	dl, _ := ctx.Deadline() // zero: no deadline
	if !w.dlSet || !dl.Equal(w.dl) {
		if err := w.setDeadline(dl); err != nil {
			return fmt.Errorf("wire: set deadline: %w", err)
		}
		w.dl, w.dlSet = dl, true
	}
	return nil
}

// end follows the I/O: the registration goes unless the context was seen
// twice in a row.
func (w *ctxWatch) end() {
	if w.keep {
		return
	}
	w.mu.Lock()
	if w.unregisterLocked() {
		w.dlSet = false
	}
	w.mu.Unlock()
}

// unregisterLocked removes the registration, if any. If its callback ran
// or is running, it waits for it (so that it cannot touch the deadline of
// a later call) and reports true: the connection deadline is then in the
// past.
func (w *ctxWatch) unregisterLocked() (fired bool) {
	if w.done == nil {
		return false
	}
	if w.stop() {
		w.fired.Done()
	} else {
		w.fired.Wait()
		fired = true
	}
	w.done, w.stop = nil, nil
	return fired
}

// close removes the registration for good, so that a long-lived context
// does not keep the connection reachable.
func (w *ctxWatch) close() {
	w.mu.Lock()
	w.closed = true
	w.unregisterLocked()
	w.mu.Unlock()
}

// ioError returns ctx's error (wrapped) instead of the timeout that ctx's
// end caused.
func (w *ctxWatch) ioError(ctx context.Context, err error) error {
	if isTimeout(err) {
		if ctxErr := ctx.Err(); ctxErr != nil {
			return fmt.Errorf("wire: %w", ctxErr)
		}
		if !w.dl.IsZero() && !time.Now().Before(w.dl) {
			// The connection deadline fired just before ctx's timer.
			return fmt.Errorf("wire: %w", context.DeadlineExceeded)
		}
	}
	return err
}

func isTimeout(err error) bool {
	var ne net.Error
	return errors.As(err, &ne) && ne.Timeout()
}
