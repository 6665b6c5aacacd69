// Package devkit provides the embedded stand-ins that `ensure-user dev` uses
// when the real thing is not configured: an in-process Redis-compatible
// server (miniredis) and an ephemeral ES256 signing key whose JWKS is served
// on loopback, with a key file so that `ensure-user dev token` can mint
// tokens for the running instance. None of it is ever used by `serve`.
package devkit

import (
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"encoding/json"
	"errors"
	"fmt"
	"io/fs"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"strconv"
	"time"

	"github.com/alicebob/miniredis/v2"
	"github.com/lestrrat-go/jwx/v2/jwa"
	"github.com/lestrrat-go/jwx/v2/jwk"
	"github.com/lestrrat-go/jwx/v2/jwt"
)

// Issuer and Audience of dev tokens (used when JWT_ISSUER and JWT_AUDIENCE
// are not set in dev mode).
const (
	Issuer   = "ensure-user-dev"
	Audience = "ensure-user"
)

// StartRedis starts an embedded Redis-compatible server on a free loopback
// port and returns its URL. stop shuts it down; what it held is gone.
func StartRedis() (url string, stop func(), err error) {
	m := miniredis.NewMiniRedis()
	if err := m.StartAddr("127.0.0.1:0"); err != nil {
		return "", nil, fmt.Errorf("start embedded redis: %w", err)
	}
	return "redis://" + m.Addr() + "/0", m.Close, nil
}

// Key is the dev signing key of a running dev instance.
type Key struct {
	private jwk.Key
	public  jwk.Set
	// Issuer and Audience go into every token the key mints.
	Issuer, Audience string
}

// keyFile is what the key file holds.
type keyFile struct {
	Key      json.RawMessage `json:"key"` // private JWK
	Issuer   string          `json:"issuer"`
	Audience string          `json:"audience"`
	PID      int             `json:"pid"`
}

// NewKey generates an ephemeral ES256 key with a random kid.
func NewKey(issuer, audience string) (*Key, error) {
	raw, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return nil, fmt.Errorf("generate dev key: %w", err)
	}
	priv, err := jwk.FromRaw(raw)
	if err != nil {
		return nil, fmt.Errorf("dev key: %w", err)
	}
	kid := "dev-" + rand.Text()[:12]
	if err := priv.Set(jwk.KeyIDKey, kid); err != nil {
		return nil, err
	}
	if err := priv.Set(jwk.AlgorithmKey, jwa.ES256); err != nil {
		return nil, err
	}
	return newKey(priv, issuer, audience)
}

func newKey(priv jwk.Key, issuer, audience string) (*Key, error) {
	pub, err := jwk.PublicKeyOf(priv)
	if err != nil {
		return nil, fmt.Errorf("dev public key: %w", err)
	}
	if err := pub.Set(jwk.KeyUsageKey, jwk.ForSignature); err != nil {
		return nil, err
	}
	set := jwk.NewSet()
	if err := set.AddKey(pub); err != nil {
		return nil, err
	}
	return &Key{private: priv, public: set, Issuer: issuer, Audience: audience}, nil
}

// Mint signs a token for userID and email, valid for ttl from now.
func (k *Key) Mint(userID, email string, ttl time.Duration) (string, error) {
	now := time.Now()
	tok, err := jwt.NewBuilder().
		Issuer(k.Issuer).
		Audience([]string{k.Audience}).
		Subject(userID).
		IssuedAt(now).
		Expiration(now.Add(ttl)).
		Claim("email", email).
		Claim("email_verified", true).
		Build()
	if err != nil {
		return "", fmt.Errorf("build dev token: %w", err)
	}
	signed, err := jwt.Sign(tok, jwt.WithKey(jwa.ES256, k.private))
	if err != nil {
		return "", fmt.Errorf("sign dev token: %w", err)
	}
	return string(signed), nil
}

// ServeJWKS serves the public key set at http://127.0.0.1:port/jwks.json
// until stop is called, and returns that URL.
func (k *Key) ServeJWKS() (url string, stop func(), err error) {
	body, err := json.Marshal(k.public)
	if err != nil {
		return "", nil, err
	}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return "", nil, fmt.Errorf("listen for the dev JWKS: %w", err)
	}
	mux := http.NewServeMux()
	mux.HandleFunc("GET /jwks.json", func(w http.ResponseWriter, _ *http.Request) {
		w.Header().Set("Content-Type", "application/json")
		_, _ = w.Write(body)
	})
	srv := &http.Server{Handler: mux, ReadHeaderTimeout: 5 * time.Second}
	go func() { _ = srv.Serve(ln) }()
	return "http://" + ln.Addr().String() + "/jwks.json", func() {
		ctx, cancel := context.WithTimeout(context.Background(), time.Second)
		defer cancel()
		_ = srv.Shutdown(ctx)
	}, nil
}

// StateDir is where dev mode keeps its key file: $XDG_STATE_HOME/ensure-user,
// else ~/.local/state/ensure-user, else a per-user temp directory.
func StateDir(getenv func(string) string) string {
	if d := getenv("XDG_STATE_HOME"); d != "" {
		return filepath.Join(d, "ensure-user")
	}
	if h := getenv("HOME"); h != "" {
		return filepath.Join(h, ".local", "state", "ensure-user")
	}
	return filepath.Join(os.TempDir(), "ensure-user-"+strconv.Itoa(os.Getuid()))
}

// keyPath is the key file of the running dev instance.
func keyPath(dir string) string { return filepath.Join(dir, "dev-signing-key.json") }

// Save writes the private key to dir, readable by the owner only, so that
// `ensure-user dev token` can mint tokens for this instance. The returned
// function removes the file (when it is still this process's).
func (k *Key) Save(dir string) (remove func(), err error) {
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return nil, fmt.Errorf("dev state dir: %w", err)
	}
	priv, err := json.Marshal(k.private)
	if err != nil {
		return nil, err
	}
	b, err := json.Marshal(keyFile{Key: priv, Issuer: k.Issuer, Audience: k.Audience, PID: os.Getpid()})
	if err != nil {
		return nil, err
	}
	path := keyPath(dir)
	tmp, err := os.CreateTemp(dir, ".dev-key-*")
	if err != nil {
		return nil, fmt.Errorf("write dev key: %w", err)
	}
	defer os.Remove(tmp.Name())
	if _, err := tmp.Write(b); err != nil {
		tmp.Close()
		return nil, fmt.Errorf("write dev key: %w", err)
	}
	if err := tmp.Close(); err != nil {
		return nil, fmt.Errorf("write dev key: %w", err)
	}
	if err := os.Rename(tmp.Name(), path); err != nil { // CreateTemp made it 0600
		return nil, fmt.Errorf("write dev key: %w", err)
	}
	return func() {
		if f, err := readKeyFile(dir); err == nil && f.PID == os.Getpid() {
			_ = os.Remove(path)
		}
	}, nil
}

// ErrNoDevInstance means no dev instance with an embedded key is running.
var ErrNoDevInstance = errors.New("no running `ensure-user dev` with an embedded signing key (start one with make run)")

// LoadKey reads the key of the running dev instance from dir.
func LoadKey(dir string) (*Key, error) {
	f, err := readKeyFile(dir)
	if errors.Is(err, fs.ErrNotExist) {
		return nil, ErrNoDevInstance
	}
	if err != nil {
		return nil, err
	}
	priv, err := jwk.ParseKey(f.Key)
	if err != nil {
		return nil, fmt.Errorf("dev key file %s: %w", keyPath(dir), err)
	}
	return newKey(priv, f.Issuer, f.Audience)
}

func readKeyFile(dir string) (keyFile, error) {
	var f keyFile
	b, err := os.ReadFile(keyPath(dir))
	if err != nil {
		return f, err
	}
	if err := json.Unmarshal(b, &f); err != nil {
		return f, fmt.Errorf("dev key file %s: %w", keyPath(dir), err)
	}
	return f, nil
}
