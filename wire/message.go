package wire

import (
	"bytes"
	"encoding/binary"
	"encoding/json"
	"errors"
	"fmt"
	"slices"
	"sync"
)

// Message is a config stream message: *Hello, *Accept, *Welcome, *Delta,
// *Ack, *Nack or *Invalidate. Bodies use the v1 body codec, encoding/json of
// these structs; the config stream carries no per-packet hot path, so
// readability and easy evolution (unknown fields are ignored) win over
// speed here, except for the Delta, which a controller writes for every
// host in a cold start: its body, the same JSON, is written without
// reflection (fastencode.go), and decoded in one pass (fastjson.go).
type Message interface {
	FrameType() FrameType
	// Validate checks the structural rules of the message; it is applied
	// before encoding and after decoding.
	Validate() error
}

// Compile-time checks that every message type is a Message.
var (
	_ Message = (*Hello)(nil)
	_ Message = (*Welcome)(nil)
	_ Message = (*Delta)(nil)
	_ Message = (*Ack)(nil)
	_ Message = (*Nack)(nil)
	_ Message = (*Invalidate)(nil)
	_ Message = (*Accept)(nil)
)

// Hello opens a config stream (agent → controller). It is authenticated
// with the host key by SignHello and checked by VerifyHello.
type Hello struct {
	Host         string `json:"host"`
	HostID       uint32 `json:"hostID"`
	AgentVersion string `json:"agentVersion,omitempty"`
	// ViewVersion is the version of the view the agent holds, 0 for none;
	// the controller answers with the deltas since then, or a snapshot.
	ViewVersion uint64 `json:"viewVersion"`
	// ViewHash is ViewHash of the resources the agent holds (empty when it
	// holds none). A controller replica that has no history back to
	// ViewVersion (it compiled the view after that version was made, e.g.
	// after a failover or a restart) but finds the same hash answers with
	// an empty delta instead of a snapshot.
	ViewHash []byte `json:"viewHash,omitempty"`
	// Nonce is fresh random bytes (NewNonce), MinNonceLen to MaxNonceLen.
	Nonce []byte `json:"nonce"`
	// Time is the agent's clock when it sent the Hello, Unix seconds.
	Time int64 `json:"time"`
	// MAC is HMAC-SHA256 over all the fields above (see SignHello).
	MAC []byte `json:"mac"`
}

// FrameType implements Message.
func (*Hello) FrameType() FrameType { return FrameHello }

// Validate implements Message.
func (m *Hello) Validate() error {
	if m.Host == "" {
		return fmt.Errorf("wire: hello: empty host: %w", ErrMalformed)
	}
	if n := len(m.ViewHash); n != 0 && n != ViewHashSize {
		return fmt.Errorf("wire: hello from %q: view hash of %d bytes, want %d: %w", m.Host, n, ViewHashSize, ErrMalformed)
	}
	return nil
}

// Welcome answers a Hello (controller → agent). The controller may send
// another Welcome later on the same stream to update the replica list; the
// agent then takes Replicas and ReplicasVersion and ignores the rest.
type Welcome struct {
	HostID uint32 `json:"hostID"`
	// Epoch is the epoch of the view versions (the high bits of every
	// version: the etcd cluster that numbers them).
	Epoch uint64 `json:"epoch,omitempty"`
	// Replicas lists the controller replicas' agent addresses.
	Replicas        []string `json:"replicas,omitempty"`
	ReplicasVersion uint64   `json:"replicasVersion,omitempty"`
	// Snapshot is set when the controller cannot send deltas from the
	// agent's ViewVersion: a full snapshot follows.
	Snapshot bool `json:"snapshot,omitempty"`
	// Error, when set, refuses the agent; the controller then closes the
	// stream.
	Error string `json:"error,omitempty"`
}

// FrameType implements Message.
func (*Welcome) FrameType() FrameType { return FrameWelcome }

// Validate implements Message.
func (*Welcome) Validate() error { return nil }

// ResourceKey names one resource of a host's view. Type is a resource type
// such as "endpoint", "subnet", "vpc", "policy", "qos", "route"; the view
// compiler defines the set, the stream carries any.
type ResourceKey struct {
	Type string `json:"type"`
	ID   string `json:"id"`
}

func (k ResourceKey) String() string { return k.Type + "/" + k.ID }

// Resource is one resource of a host's view; Data is its JSON encoding,
// defined by the view compiler.
type Resource struct {
	Key  ResourceKey     `json:"key"`
	Data json.RawMessage `json:"data,omitempty"`
	// Tail, if set, is the end of the resource's JSON, which is then Data
	// followed by Tail (Bytes). A sender uses it
	// to send bytes that many resources start with, such as a compiled
	// policy that the hosts holding it complete each with the endpoints
	// it applies to, without a copy per resource: the encoders write Data
	// then Tail, ViewHash hashes them as one, and the frame carries the
	// whole JSON in "data". It is not sent as such: a decoded Resource
	// has the whole JSON in Data and no Tail.
	Tail []byte `json:"-"`
}

// Bytes returns the resource's JSON: Data, or Data followed by Tail (a new
// slice).
func (r *Resource) Bytes() []byte {
	if len(r.Tail) == 0 {
		return r.Data
	}
	return append(append(make([]byte, 0, len(r.Data)+len(r.Tail)), r.Data...), r.Tail...)
}

// joined returns m with every upsert's Tail joined to its Data (m itself
// if none has one), for encoding/json, which knows nothing of Tail.
func (m *Delta) joined() *Delta {
	i := slices.IndexFunc(m.Upserts, func(r Resource) bool { return len(r.Tail) > 0 })
	if i < 0 {
		return m
	}
	j := *m
	j.Upserts = slices.Clone(m.Upserts)
	for i := range j.Upserts {
		r := &j.Upserts[i]
		r.Data, r.Tail = r.Bytes(), nil
	}
	return &j
}

// Delta moves an agent's view from FromVersion to ToVersion (controller →
// agent). The agent applies a delta only if FromVersion is the version it
// holds, and answers Ack{ToVersion} or Nack. A Snapshot replaces the whole
// view with Upserts (Deletes is empty). A delta or snapshot too large for
// one frame is split into frames with the same versions, all but the last
// with More set; the agent applies them together when the last arrives.
type Delta struct {
	FromVersion uint64        `json:"fromVersion"`
	ToVersion   uint64        `json:"toVersion"`
	Snapshot    bool          `json:"snapshot,omitempty"`
	More        bool          `json:"more,omitempty"`
	Upserts     []Resource    `json:"upserts,omitempty"`
	Deletes     []ResourceKey `json:"deletes,omitempty"`
	// ViewHash, if set, is ViewHash of the whole view at ToVersion: the
	// agent checks it after applying the delta and answers a mismatch with
	// a Nack (then gets a snapshot), so a view that diverged from the
	// controller's heals instead of drifting.
	ViewHash []byte `json:"viewHash,omitempty"`
	// CompactData is not sent: the sender vouches that the Data of every
	// upsert (followed by its Tail) is one valid JSON value with no whitespace outside its
	// strings, as json.Marshal writes it, and AppendMessage copies it into
	// the frame without checking it (otherwise it checks it, and leaves
	// data it cannot copy as it is to encoding/json). A controller sets it
	// on the views it encodes itself.
	CompactData bool `json:"-"`
}

// FrameType implements Message.
func (*Delta) FrameType() FrameType { return FrameDelta }

// Validate implements Message.
func (m *Delta) Validate() error {
	if m.ToVersion < m.FromVersion {
		return fmt.Errorf("wire: delta from version %d back to %d: %w", m.FromVersion, m.ToVersion, ErrMalformed)
	}
	if n := len(m.ViewHash); n != 0 && n != ViewHashSize {
		return fmt.Errorf("wire: delta to version %d: view hash of %d bytes, want %d: %w", m.ToVersion, n, ViewHashSize, ErrMalformed)
	}
	if m.Snapshot && len(m.Deletes) > 0 {
		return fmt.Errorf("wire: snapshot to version %d has %d deletes: %w", m.ToVersion, len(m.Deletes), ErrMalformed)
	}
	for i := range m.Upserts {
		if err := m.Upserts[i].Key.validate(); err != nil {
			return fmt.Errorf("wire: delta to version %d: upsert %d: %w", m.ToVersion, i, err)
		}
	}
	for i := range m.Deletes {
		if err := m.Deletes[i].validate(); err != nil {
			return fmt.Errorf("wire: delta to version %d: delete %d: %w", m.ToVersion, i, err)
		}
	}
	return nil
}

func (k ResourceKey) validate() error {
	if k.Type == "" || k.ID == "" {
		return fmt.Errorf("resource key %q: empty type or id: %w", k.String(), ErrMalformed)
	}
	return nil
}

// Ack says the agent adopted the view at Version (agent → controller).
// Error, if set, says that programming it into the data plane failed: the
// view is fine and the agent holds it, retries locally and needs no
// snapshot. An agent sends another Ack of the version it holds, unasked,
// when that error changes (a retry succeeded: Error empty).
type Ack struct {
	Version uint64 `json:"version"`
	Error   string `json:"error,omitempty"`
}

// FrameType implements Message.
func (*Ack) FrameType() FrameType { return FrameAck }

// Validate implements Message.
func (*Ack) Validate() error { return nil }

// Nack says the agent refused the delta to Version (agent → controller):
// it does not start at the version held, the view it leads to does not
// match the hash or cannot be translated. The view stays as it was and the
// controller answers with a snapshot.
type Nack struct {
	Version uint64 `json:"version"`
	Error   string `json:"error"`
}

// FrameType implements Message.
func (*Nack) FrameType() FrameType { return FrameNack }

// Validate implements Message.
func (*Nack) Validate() error { return nil }

// FrameType implements Message: an Invalidate may also travel on the
// config stream, as JSON.
func (*Invalidate) FrameType() FrameType { return FrameInvalidate }

// Validate implements Message.
func (m *Invalidate) Validate() error {
	if err := checkVNIAddr(m.VNI, m.IP); err != nil {
		return fmt.Errorf("wire: invalidate vni %d ip %v: %w", m.VNI, m.IP, err)
	}
	if err := checkOptAddr(m.Location.HostIP); err != nil {
		return fmt.Errorf("wire: invalidate vni %d ip %v: location %v: %w", m.VNI, m.IP, m.Location.HostIP, err)
	}
	return nil
}

// NewMessage returns an empty message of a frame type, or nil.
func NewMessage(t FrameType) Message {
	switch t {
	case FrameHello:
		return &Hello{}
	case FrameWelcome:
		return &Welcome{}
	case FrameDelta:
		return &Delta{}
	case FrameAck:
		return &Ack{}
	case FrameNack:
		return &Nack{}
	case FrameInvalidate:
		return &Invalidate{}
	case FrameAccept:
		return &Accept{}
	}
	return nil
}

// AppendMessage validates m and appends it to dst as one frame, failing
// with ErrTooLarge if the frame would exceed maxFrame (DefaultMaxFrame if
// maxFrame <= 0). On error dst is returned with its original length.
func AppendMessage(dst []byte, m Message, maxFrame int) ([]byte, error) {
	if maxFrame <= 0 {
		maxFrame = DefaultMaxFrame
	}
	t := m.FrameType()
	if err := m.Validate(); err != nil {
		return dst, fmt.Errorf("wire: encode %v: %w", t, err)
	}
	start := len(dst)
	b, ok := []byte(nil), false
	if d, isDelta := m.(*Delta); isDelta {
		if b, ok = appendDeltaJSON(append(dst, 0, 0, 0, 0, byte(t)), d); !ok {
			m = d.joined()
		}
	}
	if !ok {
		e := encoderPool.Get().(*frameEncoder)
		e.w.b = append(dst[:start], 0, 0, 0, 0, byte(t))
		err := e.enc.Encode(m)
		b = e.w.b
		e.w.b = nil
		encoderPool.Put(e)
		if err != nil {
			return dst[:start], fmt.Errorf("wire: encode %v: %w", t, err)
		}
		b = bytes.TrimSuffix(b, []byte("\n"))
	}
	n := len(b) - start - 4 // type byte plus body
	if n > maxFrame {
		return b[:start], fmt.Errorf("wire: encode %v: frame of %d bytes exceeds %d: %w", t, n, maxFrame, ErrTooLarge)
	}
	binary.BigEndian.PutUint32(b[start:], uint32(n))
	return b, nil
}

// unmarshal is json.Unmarshal into a new message, with a one-pass fast
// path for the frames a session carries most (see fastjson.go).
func unmarshal(body []byte, m Message) error {
	switch m := m.(type) {
	case *Delta:
		if fastDecodeDelta(body, m) {
			return nil
		}
		*m = Delta{}
	case *Ack:
		if fastDecodeAck(body, m) {
			return nil
		}
		*m = Ack{}
	}
	return json.Unmarshal(body, m)
}

// frameEncoder is a json.Encoder (without HTML escaping) that appends to
// a slice. Encoders are pooled: an Encoder keeps no state between values
// but a write error, and appendWriter never fails.
type frameEncoder struct {
	w   appendWriter
	enc *json.Encoder
}

var encoderPool = sync.Pool{New: func() any {
	e := &frameEncoder{}
	e.enc = json.NewEncoder(&e.w)
	e.enc.SetEscapeHTML(false)
	return e
}}

type appendWriter struct{ b []byte }

func (w *appendWriter) Write(p []byte) (int, error) {
	w.b = append(w.b, p...)
	return len(p), nil
}

// DecodeMessage decodes the body of a frame of type t and validates it.
// An unknown type fails with ErrUnknownType, a body that is not valid JSON
// for the type or breaks its rules with ErrMalformed.
func DecodeMessage(t FrameType, body []byte) (Message, error) {
	m := NewMessage(t)
	if m == nil {
		return nil, fmt.Errorf("wire: decode %v: %w", t, ErrUnknownType)
	}
	if err := unmarshal(body, m); err != nil {
		return nil, fmt.Errorf("wire: decode %v: %w: %w", t, ErrMalformed, err)
	}
	if err := m.Validate(); err != nil {
		if !errors.Is(err, ErrMalformed) {
			err = fmt.Errorf("%w: %w", ErrMalformed, err)
		}
		return nil, fmt.Errorf("wire: decode %v: %w", t, err)
	}
	return m, nil
}
