package redisbus

import (
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"errors"
	"fmt"
	"io"
	"math/big"
	"net"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/redis/rueidis"
	"go.uber.org/zap"
	"go.uber.org/zap/zaptest"

	"github.com/ensure-user/ensure-user/internal/setting"
	"github.com/ensure-user/ensure-user/test/testenv"
)

func TestClientOptions(t *testing.T) {
	t.Parallel()
	tests := []struct {
		name  string
		url   string
		check func(t *testing.T, o rueidis.ClientOption)
	}{
		{
			name: "defaults",
			url:  "redis://127.0.0.1:6390/2",
			check: func(t *testing.T, o rueidis.ClientOption) {
				if o.Dialer.Timeout != DialTimeout || o.ConnWriteTimeout != ConnWriteTimeout {
					t.Errorf("timeouts %s/%s, want %s/%s", o.Dialer.Timeout, o.ConnWriteTimeout, DialTimeout, ConnWriteTimeout)
				}
				if !o.DisableCache || !o.DisableRetry || !o.AlwaysPipelining || o.ClientName != ClientName || o.DialCtxFn == nil {
					t.Errorf("options %+v", o)
				}
				if o.ReadBufferEachConn != ConnBuffer || o.WriteBufferEachConn != ConnBuffer {
					t.Errorf("buffers %d/%d, want %d", o.ReadBufferEachConn, o.WriteBufferEachConn, ConnBuffer)
				}
				if o.SelectDB != 2 || o.InitAddress[0] != "127.0.0.1:6390" || o.TLSConfig != nil {
					t.Errorf("db %d, addresses %v, tls %v", o.SelectDB, o.InitAddress, o.TLSConfig)
				}
			},
		},
		{
			name: "URL settings win",
			url:  "redis://h:1/0?dial_timeout=3s&write_timeout=4s&client_name=other",
			check: func(t *testing.T, o rueidis.ClientOption) {
				if o.Dialer.Timeout != 3*time.Second || o.ConnWriteTimeout != 4*time.Second || o.ClientName != "other" {
					t.Errorf("options %+v", o)
				}
			},
		},
		{
			name: "TLS",
			url:  "rediss://user:pw@cache.example.com:6380",
			check: func(t *testing.T, o rueidis.ClientOption) {
				if o.TLSConfig == nil || o.TLSConfig.ServerName != "cache.example.com" || o.Username != "user" || o.Password != "pw" {
					t.Errorf("options %+v", o)
				}
			},
		},
		{
			name: "cluster",
			url:  "redis://a:1?addr=b:2&addr=c:3",
			check: func(t *testing.T, o rueidis.ClientOption) {
				if len(o.InitAddress) != 3 || o.ClusterOption.MaxMovedRedirections != MaxMovedRedirections {
					t.Errorf("addresses %v, redirections %d", o.InitAddress, o.ClusterOption.MaxMovedRedirections)
				}
			},
		},
		{
			name: "sentinel",
			url:  "rediss://user:pw@s1:26379?master_set=main&addr=s2:26379",
			check: func(t *testing.T, o rueidis.ClientOption) {
				s := o.Sentinel
				if s.MasterSet != "main" || len(o.InitAddress) != 2 {
					t.Errorf("master set %q, sentinels %v", s.MasterSet, o.InitAddress)
				}
				if s.Dialer.Timeout != DialTimeout || s.TLSConfig == nil || s.ClientName != ClientName || s.TopologyRefreshInterval != SentinelRefresh {
					t.Errorf("sentinel options %+v", s)
				}
				if s.Username != "" || s.Password != "" {
					t.Errorf("the master's credentials went to the sentinels")
				}
			},
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			o, err := clientOptions(ConnConfig{URL: setting.Secret(tt.url)})
			if err != nil {
				t.Fatal(err)
			}
			tt.check(t, o)
		})
	}
}

// TestClientOptionsFlushDelay: REDIS_MAX_FLUSH_DELAY reaches rueidis, and
// pipelining stays on, which the delay batches.
func TestClientOptionsFlushDelay(t *testing.T) {
	t.Parallel()
	for _, d := range []time.Duration{0, 250 * time.Microsecond} {
		o, err := clientOptions(ConnConfig{URL: "redis://127.0.0.1:1", MaxFlushDelay: d})
		if err != nil {
			t.Fatal(err)
		}
		if o.MaxFlushDelay != d || !o.AlwaysPipelining {
			t.Errorf("MaxFlushDelay %v, AlwaysPipelining %v; want %v, true", o.MaxFlushDelay, o.AlwaysPipelining, d)
		}
	}
}

func TestClientOptionsErrors(t *testing.T) {
	t.Parallel()
	pki := newPKI(t)
	tests := []struct {
		name string
		cfg  ConnConfig
	}{
		{"unparsable URL", ConnConfig{URL: "redis://user:s3cret@[::1"}},
		{"bad database", ConnConfig{URL: "redis://user:s3cret@h:1/x/y"}},
		{"bad scheme", ConnConfig{URL: "http://user:s3cret@h:1"}},
		{"TLS files without rediss", ConnConfig{URL: "redis://h:1", CAFile: pki.ca}},
		{"missing CA file", ConnConfig{URL: "rediss://h:1", CAFile: filepath.Join(t.TempDir(), "none.pem")}},
		{"CA file without PEM", ConnConfig{URL: "rediss://h:1", CAFile: writeFile(t, "junk.pem", "junk")}},
		{"certificate without key", ConnConfig{URL: "rediss://h:1", CertFile: pki.clientCert}},
		{"mismatched key", ConnConfig{URL: "rediss://h:1", CertFile: pki.clientCert, KeyFile: pki.serverKey}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			_, err := clientOptions(tt.cfg)
			if err == nil {
				t.Fatal("clientOptions succeeded")
			}
			if strings.Contains(err.Error(), "s3cret") {
				t.Errorf("error reveals the password: %v", err)
			}
		})
	}
}

func TestNotSent(t *testing.T) {
	t.Parallel()
	dialRefused := &net.OpError{Op: "dial", Net: "tcp", Err: errors.New("connection refused")}
	tests := []struct {
		err  error
		want bool
	}{
		{rueidis.ErrClosing, true},
		{&dialError{io.EOF}, true},
		{fmt.Errorf("wrapped: %w", dialRefused), true},
		{&net.OpError{Op: "read", Net: "tcp", Err: errors.New("connection reset")}, false},
		{io.EOF, false},
		{context.DeadlineExceeded, false},
		{context.Canceled, false},
	}
	for _, tt := range tests {
		if got := notSent(tt.err); got != tt.want {
			t.Errorf("notSent(%v) = %v, want %v", tt.err, got, tt.want)
		}
	}
}

// TestDialWhileDown: Dial succeeds with nothing listening, its commands fail
// fast with an error classified as not sent, and it connects once Redis is up.
func TestDialWhileDown(t *testing.T) {
	t.Parallel()
	r := testenv.StartRedis(t)
	r.Kill()
	client, closeClient, err := Dial(ConnConfig{URL: setting.Secret(r.URL())}, zaptest.NewLogger(t))
	if err != nil {
		t.Fatalf("Dial with Redis down = %v", err)
	}
	defer closeClient()
	start := time.Now()
	err = client.Do(testContext(t), client.B().Ping().Build()).Error()
	if err == nil || !notSent(err) || time.Since(start) > time.Second {
		t.Fatalf("PING with Redis down = %v after %s; want a fast not-sent error", err, time.Since(start))
	}
	r.Restart()
	if err := client.Do(testContext(t), client.B().Ping().Build()).Error(); err != nil {
		t.Fatalf("PING after Redis came up = %v", err)
	}
}

// TestDialFailsWithoutAnyNode: a cluster or sentinel URL with every node
// down fails Dial, as rueidis must learn the topology at construction.
func TestDialFailsWithoutAnyNode(t *testing.T) {
	t.Parallel()
	p1, p2 := testenv.FreeRedisPort(t), testenv.FreeRedisPort(t)
	for _, url := range []string{
		fmt.Sprintf("redis://127.0.0.1:%d?addr=127.0.0.1:%d", p1, p2),
		fmt.Sprintf("redis://127.0.0.1:%d?master_set=main", p1),
	} {
		if _, _, err := Dial(ConnConfig{URL: setting.Secret(url)}, zap.NewNop()); err == nil {
			t.Errorf("Dial(%s) succeeded", url)
		}
	}
}

// TestDialWrongPassword: authentication errors fail Dial at once (retrying
// cannot fix them) and do not reveal the password.
func TestDialWrongPassword(t *testing.T) {
	t.Parallel()
	r := testenv.StartRedis(t, testenv.WithRedisArgs("--requirepass", "right"))
	r.SkipIfEmbedded(t, "--requirepass")
	_, _, err := Dial(ConnConfig{URL: setting.Secret("redis://:wrong@" + r.Addr())}, zap.NewNop())
	if err == nil {
		t.Fatal("Dial with a wrong password succeeded")
	}
	if strings.Contains(err.Error(), "wrong") {
		t.Errorf("error reveals the password: %v", err)
	}
	_, closeClient, err := Dial(ConnConfig{URL: setting.Secret("redis://:right@" + r.Addr())}, zap.NewNop())
	if err != nil {
		t.Fatalf("Dial with the right password = %v", err)
	}
	closeClient()
}

// TestTLS runs the bus over rediss:// with a private CA and a client
// certificate (mutual TLS), and checks that an untrusted server fails Dial.
func TestTLS(t *testing.T) {
	t.Parallel()
	pki := newPKI(t)
	tlsPort := testenv.FreeRedisPort(t)
	r := testenv.StartRedis(t, testenv.WithRedisArgs(
		"--tls-port", strconv.Itoa(tlsPort), "--tls-cert-file", pki.serverCert, "--tls-key-file", pki.serverKey,
		"--tls-ca-cert-file", pki.ca, "--tls-auth-clients", "yes"))
	r.SkipIfEmbedded(t, "TLS")
	url := fmt.Sprintf("rediss://127.0.0.1:%d/0", tlsPort)

	client, closeClient, err := Dial(ConnConfig{URL: setting.Secret(url), CAFile: pki.ca, CertFile: pki.clientCert, KeyFile: pki.clientKey}, zaptest.NewLogger(t))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(closeClient)
	f := newClientFixture(t, r, client)
	f.waitStarted(t)
	f.roundTrip(t)

	other := newPKI(t)
	if _, _, err := Dial(ConnConfig{URL: setting.Secret(url), CAFile: other.ca, CertFile: pki.clientCert, KeyFile: pki.clientKey}, zap.NewNop()); err == nil {
		t.Error("Dial trusted a server signed by another CA")
	}
}

// pki is a throwaway CA with a server certificate for 127.0.0.1 and a client
// certificate, as PEM files.
type pki struct {
	ca, serverCert, serverKey, clientCert, clientKey string
}

func newPKI(t *testing.T) pki {
	t.Helper()
	caKey, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	caTmpl := &x509.Certificate{
		SerialNumber: big.NewInt(1), Subject: pkix.Name{CommonName: "test CA"},
		NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(time.Hour),
		IsCA: true, BasicConstraintsValid: true, KeyUsage: x509.KeyUsageCertSign,
	}
	caDER, err := x509.CreateCertificate(rand.Reader, caTmpl, caTmpl, &caKey.PublicKey, caKey)
	if err != nil {
		t.Fatal(err)
	}
	ca, _ := x509.ParseCertificate(caDER)
	leaf := func(name string, usage x509.ExtKeyUsage) (certFile, keyFile string) {
		key, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
		tmpl := &x509.Certificate{
			SerialNumber: big.NewInt(time.Now().UnixNano()), Subject: pkix.Name{CommonName: name},
			NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(time.Hour),
			KeyUsage: x509.KeyUsageDigitalSignature, ExtKeyUsage: []x509.ExtKeyUsage{usage},
			IPAddresses: []net.IP{net.ParseIP("127.0.0.1")},
		}
		der, err := x509.CreateCertificate(rand.Reader, tmpl, ca, &key.PublicKey, caKey)
		if err != nil {
			t.Fatal(err)
		}
		keyDER, _ := x509.MarshalECPrivateKey(key)
		return writeFile(t, name+".crt", string(pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der}))),
			writeFile(t, name+".key", string(pem.EncodeToMemory(&pem.Block{Type: "EC PRIVATE KEY", Bytes: keyDER})))
	}
	p := pki{ca: writeFile(t, "ca.crt", string(pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: caDER})))}
	p.serverCert, p.serverKey = leaf("server", x509.ExtKeyUsageServerAuth)
	p.clientCert, p.clientKey = leaf("client", x509.ExtKeyUsageClientAuth)
	return p
}

func writeFile(t *testing.T, name, content string) string {
	t.Helper()
	path := filepath.Join(t.TempDir(), name)
	if err := os.WriteFile(path, []byte(content), 0o600); err != nil {
		t.Fatal(err)
	}
	return path
}
