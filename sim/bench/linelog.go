package bench

import (
	"bytes"
	"io"
	"sync"
)

// prefixLines returns a writer that copies whole lines to w, each
// prefixed with prefix (the name of the child whose log it is, when
// several share one log); nil w gives nil.
func prefixLines(w io.Writer, prefix string) io.Writer {
	if w == nil {
		return nil
	}
	return &linePrefixer{w: w, prefix: []byte(prefix)}
}

type linePrefixer struct {
	w      io.Writer
	prefix []byte
	mu     sync.Mutex
	buf    []byte // a partial line
}

func (l *linePrefixer) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	l.buf = append(l.buf, p...)
	for {
		i := bytes.IndexByte(l.buf, '\n')
		if i < 0 {
			return len(p), nil
		}
		line := append(append([]byte(nil), l.prefix...), l.buf[:i+1]...)
		l.buf = l.buf[i+1:]
		if _, err := l.w.Write(line); err != nil {
			return len(p), err
		}
	}
}
