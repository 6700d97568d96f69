package wire

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"net"
	"sync"
	"time"
)

// connReadBuffer is the size of a Conn's read buffer. A controller holds one
// Conn per agent, so this is paid 100,000 times: 8 KiB holds an Ack, a Hello
// or a small delta in one read, and larger frames are read through it.
// (64 KiB cost ~66 KiB of heap per connection in the stream comparison
// benchmark, sim/bench/streamcmp.go.)
const connReadBuffer = 8 << 10

// Conn carries config stream messages over a stream connection. One
// goroutine may read while others write: reads are serialized by one lock,
// writes by another. After ReadMessage or WriteMessage fails with anything
// but ErrUnknownType (a complete frame of a type this code does not know,
// which was consumed and may be skipped), the stream is out of step: close
// the Conn.
type Conn struct {
	nc net.Conn

	rmu sync.Mutex
	fr  *FrameReader

	wmu      sync.Mutex
	wbuf     []byte
	maxWrite int
}

// NewConn wraps c. maxFrame bounds the frames read and written (type byte
// plus body; DefaultMaxFrame if <= 0). A controller reads the Hello with a
// small limit and raises it with SetMaxFrame once the Hello verifies.
func NewConn(c net.Conn, maxFrame int) *Conn {
	if maxFrame <= 0 {
		maxFrame = DefaultMaxFrame
	}
	return &Conn{
		nc:       c,
		fr:       NewFrameReader(bufio.NewReaderSize(c, connReadBuffer), maxFrame),
		maxWrite: maxFrame,
	}
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
	var t FrameType
	var body []byte
	err := withDeadline(ctx, c.nc.SetReadDeadline, func() error {
		var err error
		t, body, err = c.fr.Next()
		return err
	})
	if err != nil {
		return nil, err
	}
	return DecodeMessage(t, body)
}

// WriteMessage encodes m as one frame and writes it with a single Write on
// the connection (the frame is assembled in a buffer kept between calls).
// It fails with ErrTooLarge, before writing anything, if the frame exceeds
// the limit; it gives up when ctx is done.
func (c *Conn) WriteMessage(ctx context.Context, m Message) error {
	c.wmu.Lock()
	defer c.wmu.Unlock()
	b, err := AppendMessage(c.wbuf[:0], m, c.maxWrite)
	if err != nil {
		return err
	}
	if cap(b) <= frameRetain {
		c.wbuf = b[:0]
	} else {
		c.wbuf = nil
	}
	return withDeadline(ctx, c.nc.SetWriteDeadline, func() error {
		_, err := c.nc.Write(b)
		if err != nil {
			return fmt.Errorf("wire: write %v frame: %w", m.FrameType(), err)
		}
		return nil
	})
}

// Close closes the connection; a blocked ReadMessage or WriteMessage
// returns.
func (c *Conn) Close() error { return c.nc.Close() }

// LocalAddr returns the local address of the connection.
func (c *Conn) LocalAddr() net.Addr { return c.nc.LocalAddr() }

// RemoteAddr returns the remote address of the connection.
func (c *Conn) RemoteAddr() net.Addr { return c.nc.RemoteAddr() }

// withDeadline runs do with the connection deadline set from ctx, and makes
// it return early when ctx is cancelled. If ctx ended, its error is
// returned (wrapped) instead of the I/O error it caused.
func withDeadline(ctx context.Context, set func(time.Time) error, do func() error) error {
	if err := ctx.Err(); err != nil {
		return fmt.Errorf("wire: %w", err)
	}
	dl, _ := ctx.Deadline() // zero: no deadline
	if err := set(dl); err != nil {
		return fmt.Errorf("wire: set deadline: %w", err)
	}
	done := make(chan struct{})
	stop := context.AfterFunc(ctx, func() {
		defer close(done)
		set(time.Unix(1, 0)) // in the past: unblock the I/O now
	})
	err := do()
	if !stop() {
		// The cancel func ran or is running: wait for it so that it cannot
		// touch the deadline of a later call.
		<-done
	}
	if err != nil {
		if isTimeout(err) {
			if ctxErr := ctx.Err(); ctxErr != nil {
				return fmt.Errorf("wire: %w", ctxErr)
			}
			if !dl.IsZero() && !time.Now().Before(dl) {
				// The connection deadline fired just before ctx's timer.
				return fmt.Errorf("wire: %w", context.DeadlineExceeded)
			}
		}
		return err
	}
	return nil
}

func isTimeout(err error) bool {
	var ne net.Error
	return errors.As(err, &ne) && ne.Timeout()
}
