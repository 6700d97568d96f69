package wire

import (
	"context"
	"crypto/cipher"
	"crypto/hkdf"
	"crypto/rand"
	"crypto/sha256"
	"encoding/binary"
	"errors"
	"fmt"
	"slices"
)

// Session constants.
const (
	// AcceptNonceLen is the size of the controller's nonce in an Accept.
	AcceptNonceLen = 32
	// SealOverhead is what sealing adds to a frame: the AEAD tag.
	SealOverhead = 16
	// sessionLabel starts the HKDF info of every session key.
	sessionLabel = "weft session v2: "
)

// Accept answers a Hello that verified (controller → agent). It travels in
// clear: it carries only the controller's nonce, from which, with the host
// key and the Hello's MAC, both ends derive the session's keys. Every frame
// after it, in both directions, is sealed with them.
type Accept struct {
	Nonce []byte `json:"nonce"`
}

// FrameType implements Message.
func (*Accept) FrameType() FrameType { return FrameAccept }

// Validate implements Message.
func (m *Accept) Validate() error {
	if len(m.Nonce) != AcceptNonceLen {
		return fmt.Errorf("wire: accept: nonce of %d bytes, want %d: %w", len(m.Nonce), AcceptNonceLen, ErrMalformed)
	}
	return nil
}

// sessionKeys are the keys of one config-stream session, derived by
// deriveSession.
type sessionKeys struct {
	toAgent, toController cipher.AEAD
	datagram              []byte
}

// deriveSession derives a session's keys with HKDF-SHA256: the host key is
// the secret; the Hello's MAC (which covers every Hello field, the agent's
// nonce among them) and the controller's nonce are the salt, so that each
// session of each host has keys of its own, fresh on both sides.
func deriveSession(hostKey, helloMAC, acceptNonce []byte) (sessionKeys, error) {
	salt := make([]byte, 0, len(helloMAC)+len(acceptNonce))
	salt = append(append(salt, helloMAC...), acceptNonce...)
	prk, err := hkdf.Extract(sha256.New, hostKey, salt)
	if err != nil {
		return sessionKeys{}, fmt.Errorf("wire: derive session keys: %w", err)
	}
	expand := func(purpose string) []byte {
		if err != nil {
			return nil
		}
		var k []byte
		k, err = hkdf.Expand(sha256.New, prk, sessionLabel+purpose, KeySize)
		return k
	}
	var ks sessionKeys
	toAgent, toController := expand("stream to agent"), expand("stream to controller")
	ks.datagram = expand("datagrams")
	if err != nil {
		return sessionKeys{}, fmt.Errorf("wire: derive session keys: %w", err)
	}
	if ks.toAgent, err = newAEAD(toAgent); err != nil {
		return sessionKeys{}, err
	}
	if ks.toController, err = newAEAD(toController); err != nil {
		return sessionKeys{}, err
	}
	return ks, nil
}

// frameSealer seals (or opens) the frames of one direction of a session:
// the nonce is the frame's number in that direction (a 96-bit counter from
// 0), the additional data the frame header (its length, which counts the
// tag, and its type). A frame can be neither replayed, reordered, dropped
// nor moved to the other direction or another session without its tag
// failing.
type frameSealer struct {
	aead  cipher.AEAD
	n     uint64 // frames sealed or opened so far
	nonce [12]byte
	hdr   [FrameHeaderLen]byte // open's additional data
}

// next sets the nonce of the next frame.
func (s *frameSealer) next() error {
	if s.n == ^uint64(0) {
		return errors.New("wire: session frame counter exhausted")
	}
	binary.BigEndian.PutUint64(s.nonce[4:], s.n)
	s.n++
	return nil
}

// seal seals the frame in b[start:] (header and body) in place: it grows
// by SealOverhead and its length field is updated.
func (s *frameSealer) seal(b []byte, start int) ([]byte, error) {
	if err := s.next(); err != nil {
		return b[:start], err
	}
	b = slices.Grow(b, SealOverhead)
	hdr := b[start : start+FrameHeaderLen]
	binary.BigEndian.PutUint32(hdr, binary.BigEndian.Uint32(hdr)+SealOverhead)
	body := b[start+FrameHeaderLen:]
	sealed := s.aead.Seal(body[:0], s.nonce[:], body, hdr)
	return b[:start+FrameHeaderLen+len(sealed)], nil
}

// open opens a sealed body of a frame of type t in place and returns the
// plaintext. It fails with ErrAuth.
func (s *frameSealer) open(t FrameType, body []byte) ([]byte, error) {
	if err := s.next(); err != nil {
		return nil, err
	}
	binary.BigEndian.PutUint32(s.hdr[:], uint32(1+len(body)))
	s.hdr[4] = byte(t)
	if len(body) < SealOverhead {
		return nil, fmt.Errorf("wire: open %v frame %d: %w", t, s.n-1, ErrAuth)
	}
	pt, err := s.aead.Open(body[:0], s.nonce[:], body, s.hdr[:])
	if err != nil {
		return nil, fmt.Errorf("wire: open %v frame %d: %w", t, s.n-1, ErrAuth)
	}
	return pt, nil
}

// AcceptHello is the controller's end of the handshake, for a Hello that
// VerifyHello accepted with hostKey: it sends an Accept with a fresh nonce
// and from then on seals every frame the Conn writes and opens every frame
// it reads with the session's keys. It returns the session's datagram key
// (KeySize bytes), which authenticates the host's datagrams in both
// directions for as long as the session is the host's latest.
func (c *Conn) AcceptHello(ctx context.Context, h *Hello, hostKey []byte) ([]byte, error) {
	nonce := make([]byte, AcceptNonceLen)
	if _, err := rand.Read(nonce); err != nil {
		return nil, fmt.Errorf("wire: read random nonce: %w", err)
	}
	ks, err := deriveSession(hostKey, h.MAC, nonce)
	if err != nil {
		return nil, err
	}
	if err := c.WriteMessage(ctx, &Accept{Nonce: nonce}); err != nil {
		return nil, err
	}
	c.secure(ks.toAgent, ks.toController)
	return ks.datagram, nil
}

// Handshake is the agent's end: it signs h with hostKey (h.Nonce and
// h.Time set by the caller), sends it and reads the answer. A controller
// that refuses the agent answers with a Welcome in clear whose Error says
// why: Handshake returns it, and nothing else of it may be trusted. A
// controller that accepts sends an Accept and then a Welcome sealed with
// the session's keys, which only a holder of the host key can make:
// Handshake returns it with the session's datagram key, and the Conn seals
// and opens every later frame. Any other answer fails with ErrAuth
// (a Welcome in clear without an Error, a sealed frame that does not open:
// a controller without the host key) or ErrMalformed. The answer in clear
// is read with a limit of MaxHandshakeFrame.
func (c *Conn) Handshake(ctx context.Context, h *Hello, hostKey []byte) (*Welcome, []byte, error) {
	if err := SignHello(h, hostKey); err != nil {
		return nil, nil, err
	}
	if err := c.WriteMessage(ctx, h); err != nil {
		return nil, nil, fmt.Errorf("wire: send hello: %w", err)
	}
	c.rmu.Lock()
	limit := c.fr.max
	c.fr.SetMaxFrame(min(limit, MaxHandshakeFrame))
	c.rmu.Unlock()
	m, err := c.ReadMessage(ctx)
	c.SetMaxFrame(limit)
	if err != nil {
		return nil, nil, fmt.Errorf("wire: read the answer to hello: %w", err)
	}
	switch m := m.(type) {
	case *Welcome:
		if m.Error == "" {
			return nil, nil, fmt.Errorf("wire: a welcome in clear that refuses nothing: %w", ErrAuth)
		}
		return m, nil, nil
	case *Accept:
		ks, err := deriveSession(hostKey, h.MAC, m.Nonce)
		if err != nil {
			return nil, nil, err
		}
		c.secure(ks.toController, ks.toAgent)
		m2, err := c.ReadMessage(ctx)
		if err != nil {
			return nil, nil, fmt.Errorf("wire: read welcome: %w", err)
		}
		w, ok := m2.(*Welcome)
		if !ok {
			return nil, nil, fmt.Errorf("wire: got %v instead of a welcome: %w", m2.FrameType(), ErrMalformed)
		}
		return w, ks.datagram, nil
	}
	return nil, nil, fmt.Errorf("wire: got %v instead of an accept or welcome: %w", m.FrameType(), ErrMalformed)
}
