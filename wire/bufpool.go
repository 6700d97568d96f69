package wire

import (
	"math/bits"
	"sync"
)

// Frame buffers are lent from pools shared by every FrameReader and Conn
// of the process, one pool per power-of-two size class from bufMinClass to
// frameRetain bytes, so that a connection holds a body or frame buffer
// only while it reads, decodes or writes a frame: with 100,000 mostly idle
// connections per process, buffers kept per connection would cost more
// than everything else the connection holds. Larger buffers are not
// pooled: they are dropped after use.
const (
	bufMinShift = 9 // 512 bytes: smaller frames fit in a FrameReader's own buffer
	bufMaxShift = 20
)

var bufPools [bufMaxShift - bufMinShift + 1]sync.Pool

// The largest pooled class is frameRetain (compile-time check).
var _ [frameRetain - 1<<bufMaxShift]struct{}
var _ [1<<bufMaxShift - frameRetain]struct{}

// getBuf returns an empty buffer with a capacity of at least n bytes.
func getBuf(n int) *[]byte {
	shift := bufMinShift
	if n > 1<<bufMinShift {
		shift = bits.Len(uint(n - 1))
	}
	if shift > bufMaxShift {
		b := make([]byte, 0, n)
		return &b
	}
	if p, ok := bufPools[shift-bufMinShift].Get().(*[]byte); ok {
		return p
	}
	b := make([]byte, 0, 1<<shift)
	return &b
}

// putBuf gives a buffer from getBuf back (it may have grown since). A
// buffer goes to the largest class it can serve; one above frameRetain, or
// below the smallest class, is dropped.
func putBuf(p *[]byte) {
	c := cap(*p)
	if c < 1<<bufMinShift || c > frameRetain {
		return
	}
	*p = (*p)[:0]
	bufPools[bits.Len(uint(c))-1-bufMinShift].Put(p)
}
