package alloc

import "errors"

// Sentinel errors. Every error of Allocate and Reserve wraps one of them, as
// do NewVNIs and NewPool for an invalid range or gateway (ErrOutOfRange) or a
// subnet without usable addresses (ErrExhausted); test with errors.Is.
var (
	// ErrExhausted means no free value is left in the range or subnet.
	ErrExhausted = errors.New("alloc: exhausted")
	// ErrInUse means the requested value is already allocated.
	ErrInUse = errors.New("alloc: in use")
	// ErrOutOfRange means the requested value is not allocatable: outside the
	// range or subnet, or a network, broadcast or gateway address.
	ErrOutOfRange = errors.New("alloc: out of range")
)
