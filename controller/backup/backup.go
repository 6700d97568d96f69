// Package backup writes and restores a weft cluster's backup: one file
// holding an etcd snapshot and the cluster key, without which the secrets
// sealed in the snapshot (the CA's key, host keys) do not open.
//
// The file is created with mode 0600. Its first line is "weft-backup v1",
// its second a JSON header (Meta: when, from which cluster and revision,
// and how the body is encrypted, if it is). The body is the cluster key
// (32 bytes) followed by the snapshot (etcd's, with its SHA-256 appended by
// etcd). Unencrypted, a SHA-256 of the header line and the body follows
// it. Encrypted (a passphrase), the body is cut into chunks of ChunkSize,
// each sealed with AES-256-GCM under a key derived from the passphrase
// (PBKDF2-SHA256), the header's hash as additional data and a nonce of a
// random prefix, the chunk's number and a last-chunk flag, so that a
// reordered, cut or altered file does not open.
//
// Restore extracts a backup into a new data directory (etcdutl's snapshot
// restore, with the revision bumped so that no watcher sees revisions go
// back) and writes the cluster key next to it: a controller started on
// that directory serves every object the snapshot holds.
package backup

import (
	"bufio"
	"bytes"
	"cmp"
	"context"
	"crypto/aes"
	"crypto/cipher"
	"crypto/pbkdf2"
	"crypto/rand"
	"crypto/sha256"
	"encoding/binary"
	"encoding/json"
	"errors"
	"fmt"
	"hash"
	"io"
	"os"
	"path/filepath"
	"time"

	clientv3 "go.etcd.io/etcd/client/v3"
	"go.etcd.io/etcd/etcdutl/v3/snapshot"
	"go.uber.org/zap"

	"github.com/weftnet/weft/controller/secrets"
	"github.com/weftnet/weft/controller/store"
)

const (
	magic = "weft-backup v1\n"
	// ChunkSize is the plaintext size of an encrypted chunk.
	ChunkSize = 64 << 10
	// kdfIterations of PBKDF2-SHA256 by default (OWASP's recommendation).
	kdfIterations = 600_000
	// RevisionBump is added to the restored revision (etcdutl
	// --bump-revision), far above the writes of the time a backup is
	// typically older than.
	RevisionBump = 1_000_000_000
)

// ErrCorrupt is returned for a backup file that is damaged, cut, or not
// opened by the passphrase given.
var ErrCorrupt = errors.New("backup: corrupt file or wrong passphrase")

// Meta is a backup's header.
type Meta struct {
	Created   time.Time `json:"created"`
	ClusterID string    `json:"clusterID"`
	Revision  int64     `json:"revision"`
	Members   []string  `json:"members"`
	// Encryption is nil for a plain body.
	Encryption *Encryption `json:"encryption,omitempty"`
}

// Encryption describes an encrypted body.
type Encryption struct {
	KDF         string `json:"kdf"` // "pbkdf2-sha256"
	Iterations  int    `json:"iterations"`
	Salt        []byte `json:"salt"`
	Cipher      string `json:"cipher"` // "aes-256-gcm-chunked"
	Chunk       int    `json:"chunk"`
	NoncePrefix []byte `json:"noncePrefix"`
}

// Lock encrypts a backup.
type Lock struct {
	// Passphrase encrypts the backup (empty: not encrypted).
	Passphrase []byte
	// Iterations of PBKDF2 (default 600,000, OWASP's recommendation).
	Iterations int
}

// Write writes a backup of the etcd cluster cli reaches (a snapshot of
// the member it talks to) and the cluster key to w, encrypted if lock has
// a passphrase.
func Write(ctx context.Context, w io.Writer, cli *clientv3.Client, clusterKey []byte, lock Lock) (Meta, error) {
	passphrase := lock.Passphrase
	if len(clusterKey) != secrets.KeySize {
		return Meta{}, fmt.Errorf("backup: cluster key has %d bytes, want %d", len(clusterKey), secrets.KeySize)
	}
	ml, err := cli.MemberList(ctx)
	if err != nil {
		return Meta{}, fmt.Errorf("backup: list members: %w", err)
	}
	rev, err := cli.Get(ctx, "weft-backup", clientv3.WithCountOnly())
	if err != nil {
		return Meta{}, fmt.Errorf("backup: read the revision: %w", err)
	}
	meta := Meta{Created: time.Now().UTC(), ClusterID: fmt.Sprintf("%x", ml.Header.ClusterId), Revision: rev.Header.Revision}
	for _, m := range ml.Members {
		meta.Members = append(meta.Members, m.Name)
	}
	if len(passphrase) > 0 {
		meta.Encryption = &Encryption{KDF: "pbkdf2-sha256", Iterations: cmp.Or(lock.Iterations, kdfIterations), Salt: random(16),
			Cipher: "aes-256-gcm-chunked", Chunk: ChunkSize, NoncePrefix: random(7)}
	}
	snap, err := cli.Snapshot(ctx)
	if err != nil {
		return Meta{}, fmt.Errorf("backup: snapshot: %w", err)
	}
	defer snap.Close()
	head, err := header(meta)
	if err != nil {
		return Meta{}, err
	}
	bw := bufio.NewWriterSize(w, ChunkSize)
	if _, err := bw.Write(head); err != nil {
		return Meta{}, fmt.Errorf("backup: write: %w", err)
	}
	body, err := newBodyWriter(bw, meta, head, passphrase)
	if err != nil {
		return Meta{}, err
	}
	if _, err := body.Write(clusterKey); err != nil {
		return Meta{}, fmt.Errorf("backup: write: %w", err)
	}
	if _, err := io.Copy(body, snap); err != nil {
		return Meta{}, fmt.Errorf("backup: copy the snapshot: %w", err)
	}
	if err := body.Close(); err != nil {
		return Meta{}, fmt.Errorf("backup: write: %w", err)
	}
	if err := bw.Flush(); err != nil {
		return Meta{}, fmt.Errorf("backup: write: %w", err)
	}
	return meta, nil
}

// WriteFile writes a backup to path (mode 0600, through a temporary file
// renamed over it once complete).
func WriteFile(ctx context.Context, path string, cli *clientv3.Client, clusterKey []byte, lock Lock) (meta Meta, err error) {
	tmp, err := os.CreateTemp(filepath.Dir(path), "."+filepath.Base(path)+".*")
	if err != nil {
		return Meta{}, fmt.Errorf("backup: %w", err)
	}
	defer func() {
		if err != nil {
			tmp.Close()
			os.Remove(tmp.Name())
		}
	}()
	if err := tmp.Chmod(0o600); err != nil {
		return Meta{}, fmt.Errorf("backup: %w", err)
	}
	if meta, err = Write(ctx, tmp, cli, clusterKey, lock); err != nil {
		return Meta{}, err
	}
	if err := tmp.Sync(); err != nil {
		return Meta{}, fmt.Errorf("backup: %w", err)
	}
	if err := tmp.Close(); err != nil {
		return Meta{}, fmt.Errorf("backup: %w", err)
	}
	if err := os.Rename(tmp.Name(), path); err != nil {
		return Meta{}, fmt.Errorf("backup: %w", err)
	}
	return meta, nil
}

// ReadMeta reads a backup file's header.
func ReadMeta(r io.Reader) (Meta, []byte, *bufio.Reader, error) {
	br := bufio.NewReaderSize(r, ChunkSize)
	line, err := br.ReadString('\n')
	if err != nil || line != magic {
		return Meta{}, nil, nil, fmt.Errorf("backup: not a weft backup (want %q first)", magic[:len(magic)-1])
	}
	js, err := br.ReadBytes('\n')
	if err != nil {
		return Meta{}, nil, nil, fmt.Errorf("backup: header: %w", ErrCorrupt)
	}
	var meta Meta
	if err := json.Unmarshal(js, &meta); err != nil {
		return Meta{}, nil, nil, fmt.Errorf("backup: header: %v: %w", err, ErrCorrupt)
	}
	return meta, append([]byte(line), js...), br, nil
}

// Extract reads a backup from r: it writes the snapshot to snapshotPath
// (mode 0600) and returns the header and the cluster key, after checking
// the whole file.
func Extract(r io.Reader, passphrase []byte, snapshotPath string) (Meta, []byte, error) {
	meta, head, br, err := ReadMeta(r)
	if err != nil {
		return Meta{}, nil, err
	}
	if meta.Encryption != nil && len(passphrase) == 0 {
		return meta, nil, errors.New("backup: the file is encrypted: give its passphrase")
	}
	body, err := newBodyReader(br, meta, head, passphrase)
	if err != nil {
		return meta, nil, err
	}
	key := make([]byte, secrets.KeySize)
	if _, err := io.ReadFull(body, key); err != nil {
		return meta, nil, fmt.Errorf("backup: cluster key: %w", errors.Join(err, ErrCorrupt))
	}
	f, err := os.OpenFile(snapshotPath, os.O_WRONLY|os.O_CREATE|os.O_EXCL, 0o600)
	if err != nil {
		return meta, nil, fmt.Errorf("backup: %w", err)
	}
	_, err = io.Copy(f, body)
	if cerr := f.Close(); err == nil {
		err = cerr
	}
	if err != nil {
		os.Remove(snapshotPath)
		return meta, nil, fmt.Errorf("backup: snapshot: %w", err)
	}
	return meta, key, nil
}

// RestoreConfig says where and as which member to restore.
type RestoreConfig struct {
	// DataDir is the controller's new data directory: it must hold no etcd
	// data (required).
	DataDir string
	// ClusterKeyFile receives the cluster key (default
	// DATA-DIR/cluster.key); an existing file must hold the same key.
	ClusterKeyFile string
	// Passphrase opens an encrypted backup.
	Passphrase []byte
	// Name, PeerURL and InitialCluster restore a member of a cluster
	// (every member is restored from the same backup, with its own name
	// and peer URL and the same initial cluster); empty, a single member
	// as a controller without --etcd-peer-listen runs it.
	Name, PeerURL, InitialCluster string
}

// Restore restores the backup at path into cfg.DataDir.
func Restore(path string, cfg RestoreConfig) (Meta, error) {
	if cfg.DataDir == "" {
		return Meta{}, errors.New("backup: restore: a data dir is required")
	}
	if _, err := os.Stat(filepath.Join(cfg.DataDir, "member")); err == nil {
		return Meta{}, fmt.Errorf("backup: restore: %s already holds etcd data: restore into a new data dir", cfg.DataDir)
	}
	if cfg.ClusterKeyFile == "" {
		cfg.ClusterKeyFile = filepath.Join(cfg.DataDir, "cluster.key")
	}
	name, peer, initial := cfg.Name, cfg.PeerURL, cfg.InitialCluster
	if name == "" {
		name, peer = store.SingleMemberName, store.SingleMemberPeerURL
	}
	if initial == "" {
		initial = name + "=" + peer
	}
	if err := os.MkdirAll(cfg.DataDir, 0o700); err != nil {
		return Meta{}, fmt.Errorf("backup: restore: %w", err)
	}
	work, err := os.MkdirTemp(cfg.DataDir, ".restore-")
	if err != nil {
		return Meta{}, fmt.Errorf("backup: restore: %w", err)
	}
	defer os.RemoveAll(work)
	f, err := os.Open(path)
	if err != nil {
		return Meta{}, fmt.Errorf("backup: restore: %w", err)
	}
	defer f.Close()
	snap := filepath.Join(work, "snapshot.db")
	meta, key, err := Extract(f, cfg.Passphrase, snap)
	if err != nil {
		return meta, err
	}
	out := filepath.Join(work, "etcd")
	err = snapshot.NewV3(zap.NewNop()).Restore(snapshot.RestoreConfig{
		SnapshotPath: snap, Name: name, OutputDataDir: out, PeerURLs: []string{peer},
		InitialCluster: initial, InitialClusterToken: store.ClusterToken,
		RevisionBump: RevisionBump, MarkCompacted: true,
	})
	if err != nil {
		return meta, fmt.Errorf("backup: restore the etcd snapshot: %w", err)
	}
	switch old, err := secrets.ReadKeyFile(cfg.ClusterKeyFile); {
	case errors.Is(err, os.ErrNotExist):
		if err := secrets.WriteKeyFile(cfg.ClusterKeyFile, key); err != nil {
			return meta, fmt.Errorf("backup: restore: %w", err)
		}
	case err != nil:
		return meta, fmt.Errorf("backup: restore: %w", err)
	case !bytes.Equal(old, key):
		return meta, fmt.Errorf("backup: restore: %s holds another cluster key than the backup's", cfg.ClusterKeyFile)
	}
	if err := os.Rename(filepath.Join(out, "member"), filepath.Join(cfg.DataDir, "member")); err != nil {
		return meta, fmt.Errorf("backup: restore: %w", err)
	}
	return meta, nil
}

func random(n int) []byte {
	b := make([]byte, n)
	_, _ = rand.Read(b) // never fails (crypto/rand)
	return b
}

func header(meta Meta) ([]byte, error) {
	js, err := json.Marshal(meta)
	if err != nil {
		return nil, fmt.Errorf("backup: header: %w", err)
	}
	return append(append([]byte(magic), js...), '\n'), nil
}

// aeadOf derives the chunk cipher of an encrypted body.
func aeadOf(e *Encryption, passphrase []byte) (cipher.AEAD, error) {
	if e.KDF != "pbkdf2-sha256" || e.Cipher != "aes-256-gcm-chunked" || e.Chunk <= 0 || e.Chunk > 16<<20 || len(e.NoncePrefix) != 7 || e.Iterations < 1 {
		return nil, fmt.Errorf("backup: unknown encryption %s/%s: %w", e.KDF, e.Cipher, ErrCorrupt)
	}
	k, err := pbkdf2.Key(sha256.New, string(passphrase), e.Salt, e.Iterations, 32)
	if err != nil {
		return nil, fmt.Errorf("backup: derive the key: %w", err)
	}
	block, err := aes.NewCipher(k)
	if err != nil {
		return nil, fmt.Errorf("backup: %w", err)
	}
	return cipher.NewGCM(block)
}

// nonce is the prefix, the chunk number and the last-chunk flag.
func nonce(prefix []byte, n uint32, last bool) []byte {
	b := make([]byte, 0, 12)
	b = append(b, prefix...)
	b = binary.BigEndian.AppendUint32(b, n)
	if last {
		return append(b, 1)
	}
	return append(b, 0)
}

// bodyWriter writes the body: plain with a trailing hash, or in sealed
// chunks (each a 4-byte length and the sealed bytes).
type bodyWriter struct {
	w io.Writer
	bodyCipher
}

// bodyCipher is what both ends of a body keep: the hash of a plain body,
// or the cipher of an encrypted one with its additional data, the
// current chunk and its number.
type bodyCipher struct {
	sum  hash.Hash // plain
	aead cipher.AEAD
	e    *Encryption
	ad   []byte
	buf  []byte
	n    uint32
}

func newBodyCipher(meta Meta, head, passphrase []byte) (bodyCipher, error) {
	if meta.Encryption == nil {
		sum := sha256.New()
		sum.Write(head)
		return bodyCipher{sum: sum}, nil
	}
	aead, err := aeadOf(meta.Encryption, passphrase)
	if err != nil {
		return bodyCipher{}, err
	}
	ad := sha256.Sum256(head)
	return bodyCipher{aead: aead, e: meta.Encryption, ad: ad[:]}, nil
}

func newBodyWriter(w io.Writer, meta Meta, head, passphrase []byte) (*bodyWriter, error) {
	c, err := newBodyCipher(meta, head, passphrase)
	if err != nil {
		return nil, err
	}
	return &bodyWriter{w: w, bodyCipher: c}, nil
}

func (b *bodyWriter) Write(p []byte) (int, error) {
	if b.aead == nil {
		b.sum.Write(p)
		return b.w.Write(p)
	}
	n := len(p)
	for len(p) > 0 {
		take := min(len(p), b.e.Chunk-len(b.buf))
		b.buf = append(b.buf, p[:take]...)
		p = p[take:]
		if len(b.buf) == b.e.Chunk && len(p) > 0 {
			if err := b.seal(false); err != nil {
				return 0, err
			}
		}
	}
	return n, nil
}

// seal writes the buffered chunk.
func (b *bodyWriter) seal(last bool) error {
	sealed := b.aead.Seal(nil, nonce(b.e.NoncePrefix, b.n, last), b.buf, b.ad)
	b.n++
	b.buf = b.buf[:0]
	if _, err := b.w.Write(binary.BigEndian.AppendUint32(nil, uint32(len(sealed)))); err != nil {
		return err
	}
	_, err := b.w.Write(sealed)
	return err
}

// Close writes the last chunk, or the hash.
func (b *bodyWriter) Close() error {
	if b.aead == nil {
		_, err := b.w.Write(b.sum.Sum(nil))
		return err
	}
	return b.seal(true)
}

// bodyReader reads what bodyWriter wrote and fails with ErrCorrupt at the
// end of a body that does not check.
type bodyReader struct {
	r *bufio.Reader
	bodyCipher
	last bool
}

func newBodyReader(r *bufio.Reader, meta Meta, head, passphrase []byte) (*bodyReader, error) {
	c, err := newBodyCipher(meta, head, passphrase)
	if err != nil {
		return nil, err
	}
	return &bodyReader{r: r, bodyCipher: c}, nil
}

func (b *bodyReader) Read(p []byte) (int, error) {
	if b.aead == nil {
		return b.readPlain(p)
	}
	for len(b.buf) == 0 {
		if b.last {
			return 0, io.EOF
		}
		if err := b.open(); err != nil {
			return 0, err
		}
	}
	n := copy(p, b.buf)
	b.buf = b.buf[n:]
	return n, nil
}

// readPlain passes the body on, holding back the last sha256.Size bytes,
// which it checks at the end.
func (b *bodyReader) readPlain(p []byte) (int, error) {
	if len(p) == 0 {
		return 0, nil
	}
	peek, err := b.r.Peek(min(len(p)+sha256.Size, b.r.Size()))
	if len(peek) > sha256.Size {
		n, _ := b.r.Read(p[:len(peek)-sha256.Size])
		b.sum.Write(p[:n])
		return n, nil
	}
	if err != io.EOF && err != nil {
		return 0, err
	}
	if len(peek) != sha256.Size || !bytes.Equal(peek, b.sum.Sum(nil)) {
		return 0, fmt.Errorf("backup: checksum: %w", ErrCorrupt)
	}
	return 0, io.EOF
}

// open reads and opens the next chunk.
func (b *bodyReader) open() error {
	var l [4]byte
	if _, err := io.ReadFull(b.r, l[:]); err != nil {
		return fmt.Errorf("backup: cut after chunk %d: %w", b.n, ErrCorrupt)
	}
	size := binary.BigEndian.Uint32(l[:])
	if int(size) > b.e.Chunk+b.aead.Overhead() {
		return fmt.Errorf("backup: chunk %d of %d bytes: %w", b.n, size, ErrCorrupt)
	}
	sealed := make([]byte, size)
	if _, err := io.ReadFull(b.r, sealed); err != nil {
		return fmt.Errorf("backup: cut in chunk %d: %w", b.n, ErrCorrupt)
	}
	plain, err := b.aead.Open(nil, nonce(b.e.NoncePrefix, b.n, false), sealed, b.ad)
	if err != nil {
		if plain, err = b.aead.Open(nil, nonce(b.e.NoncePrefix, b.n, true), sealed, b.ad); err != nil {
			return fmt.Errorf("backup: chunk %d: %w", b.n, ErrCorrupt)
		}
		b.last = true
		if _, err := b.r.Peek(1); err != io.EOF {
			return fmt.Errorf("backup: data after the last chunk: %w", ErrCorrupt)
		}
	}
	b.n++
	b.buf = plain
	return nil
}
