package natsrv_test

import (
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"math/big"
	"net"
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/nats-io/nats.go"

	"github.com/fleetjob/fleetjob/internal/natsrv"
)

// pemPair writes a certificate signed by parent (itself when nil) and its key.
func pemPair(t *testing.T, dir, name string, tmpl *x509.Certificate, parent *x509.Certificate, parentKey *ecdsa.PrivateKey) (*x509.Certificate, *ecdsa.PrivateKey) {
	t.Helper()
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	if parent == nil {
		parent, parentKey = tmpl, key
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, parent, &key.PublicKey, parentKey)
	if err != nil {
		t.Fatal(err)
	}
	kb, _ := x509.MarshalECPrivateKey(key)
	os.WriteFile(filepath.Join(dir, name+".pem"), pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der}), 0o600)
	os.WriteFile(filepath.Join(dir, name+"-key.pem"), pem.EncodeToMemory(&pem.Block{Type: "EC PRIVATE KEY", Bytes: kb}), 0o600)
	cert, _ := x509.ParseCertificate(der)
	return cert, key
}

// With a certificate and a CA, the embedded server takes only TLS
// connections from clients with a certificate that CA signed.
func TestMutualTLS(t *testing.T) {
	dir := t.TempDir()
	now := time.Now()
	ca, caKey := pemPair(t, dir, "ca", &x509.Certificate{SerialNumber: big.NewInt(1), Subject: pkix.Name{CommonName: "test ca"},
		NotBefore: now.Add(-time.Hour), NotAfter: now.Add(time.Hour), IsCA: true, BasicConstraintsValid: true,
		KeyUsage: x509.KeyUsageCertSign | x509.KeyUsageDigitalSignature}, nil, nil)
	pemPair(t, dir, "server", &x509.Certificate{SerialNumber: big.NewInt(2), Subject: pkix.Name{CommonName: "nats"},
		NotBefore: now.Add(-time.Hour), NotAfter: now.Add(time.Hour), IPAddresses: []net.IP{net.ParseIP("127.0.0.1")},
		ExtKeyUsage: []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth}, KeyUsage: x509.KeyUsageDigitalSignature}, ca, caKey)
	pemPair(t, dir, "agent", &x509.Certificate{SerialNumber: big.NewInt(3), Subject: pkix.Name{CommonName: "agent"},
		NotBefore: now.Add(-time.Hour), NotAfter: now.Add(time.Hour),
		ExtKeyUsage: []x509.ExtKeyUsage{x509.ExtKeyUsageClientAuth}, KeyUsage: x509.KeyUsageDigitalSignature}, ca, caKey)
	f := func(n string) string { return filepath.Join(dir, n) }
	s, user, err := natsrv.StartEphemeral(natsrv.Config{Addr: "127.0.0.1:-1", StoreDir: t.TempDir(),
		TLS: natsrv.TLSFiles{Cert: f("server.pem"), Key: f("server-key.pem"), CA: f("ca.pem")}})
	if err != nil {
		t.Fatal(err)
	}
	defer s.Shutdown()
	url := s.ClientURL()
	if nc, err := nats.Connect(url, user.Option(), nats.RootCAs(f("ca.pem")), nats.NoReconnect()); err == nil {
		nc.Close()
		t.Error("a client without a certificate was accepted")
	}
	nc, err := nats.Connect(url, user.Option(), nats.RootCAs(f("ca.pem")), nats.ClientCert(f("agent.pem"), f("agent-key.pem")))
	if err != nil {
		t.Fatalf("a client with a certificate of the CA: %v", err)
	}
	if !nc.TLSRequired() {
		t.Error("connection not over TLS")
	}
	nc.Close()
	// in-process connections (serve's own roles) need no certificate
	ip, err := nats.Connect("", user.Option(), nats.InProcessServer(s))
	if err != nil {
		t.Fatalf("in-process connection: %v", err)
	}
	ip.Close()
}
