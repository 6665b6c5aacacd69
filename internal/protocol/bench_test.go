package protocol_test

import (
	"testing"

	"github.com/ensure-user/ensure-user/internal/protocol"
)

func BenchmarkEncodeCommand(b *testing.B) {
	cmd := command()
	b.ReportAllocs()
	for b.Loop() {
		_ = protocol.EncodeCommand(cmd, "engine:replies")
	}
}

func BenchmarkAppendCommand(b *testing.B) {
	cmd := command()
	buf := make([]byte, 0, 512)
	b.ReportAllocs()
	for b.Loop() {
		buf = protocol.AppendCommand(buf[:0], cmd, "engine:replies")
	}
}

func BenchmarkDecodeReply(b *testing.B) {
	raw := []byte(`{"function":"createUser","requestId":"0b5c7f4e-3a1d-4c2b-9e8f-1a2b3c4d5e6f","message":"user-1","status":"ok"}`)
	b.ReportAllocs()
	for b.Loop() {
		if _, err := protocol.DecodeReply(raw); err != nil {
			b.Fatal(err)
		}
	}
}
