// Package secrets holds a weft cluster's trust roots.
//
//   - The cluster key: 32 random bytes in a file (hex), never in etcd. All
//     replicas sharing one etcd are given the same file; the first start of
//     a cluster creates it (LoadOrCreateKeyFile).
//   - A Sealer encrypts the secrets weft keeps in etcd under the cluster key
//     (AES-256-GCM with a key derived by HKDF-SHA256, info "weft secrets
//     v1"), binding each to the etcd key it is stored under, so that a
//     sealed value copied to another key does not open.
//   - The cluster CA (ECDSA P-256), created once per cluster: its
//     certificate in plain text, its private key sealed. It issues each
//     replica's serving certificate and the client certificates of users.
//
// A replica starts with:
//
//	key, err := secrets.LoadOrCreateKeyFile(path)
//	sealer, err := secrets.NewSealer(key)
//	ca, err := secrets.LoadOrCreateCA(ctx, etcd, st.Key("ca/cert"), st.Key("secrets/ca"), sealer)
//	serving, err := ca.ServingCert(sans, time.Now())
package secrets
