package testenv

import (
	"bytes"
	"compress/gzip"
	"context"
	"errors"
	"net/http"
	"testing"
	"time"

	"go.opentelemetry.io/otel/codes"
	"go.opentelemetry.io/otel/trace"
	coltracepb "go.opentelemetry.io/proto/otlp/collector/trace/v1"
	commonpb "go.opentelemetry.io/proto/otlp/common/v1"
	resourcepb "go.opentelemetry.io/proto/otlp/resource/v1"
	tracepb "go.opentelemetry.io/proto/otlp/trace/v1"
	"google.golang.org/grpc"
	grpccodes "google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/grpc/metadata"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/proto"
)

func otlpContext(t *testing.T) context.Context {
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	t.Cleanup(cancel)
	return ctx
}

func str(k, v string) *commonpb.KeyValue {
	return &commonpb.KeyValue{Key: k, Value: &commonpb.AnyValue{Value: &commonpb.AnyValue_StringValue{StringValue: v}}}
}

// export is one span of service svc, every attribute type, with a parent.
func export(svc string) *coltracepb.ExportTraceServiceRequest {
	return &coltracepb.ExportTraceServiceRequest{ResourceSpans: []*tracepb.ResourceSpans{{
		Resource: &resourcepb.Resource{Attributes: []*commonpb.KeyValue{str("service.name", svc), str("env", "test")}},
		ScopeSpans: []*tracepb.ScopeSpans{{
			Scope: &commonpb.InstrumentationScope{Name: "scope"},
			Spans: []*tracepb.Span{{
				TraceId:           bytes.Repeat([]byte{0xab}, 16),
				SpanId:            bytes.Repeat([]byte{0x01}, 8),
				ParentSpanId:      bytes.Repeat([]byte{0x02}, 8),
				Name:              "engine createUser",
				Kind:              tracepb.Span_SPAN_KIND_CONSUMER,
				StartTimeUnixNano: 1e18,
				EndTimeUnixNano:   1e18 + 5,
				Status:            &tracepb.Status{Code: tracepb.Status_STATUS_CODE_ERROR, Message: "boom"},
				Attributes: []*commonpb.KeyValue{
					str("s", "v"),
					{Key: "b", Value: &commonpb.AnyValue{Value: &commonpb.AnyValue_BoolValue{BoolValue: true}}},
					{Key: "i", Value: &commonpb.AnyValue{Value: &commonpb.AnyValue_IntValue{IntValue: 42}}},
					{Key: "f", Value: &commonpb.AnyValue{Value: &commonpb.AnyValue_DoubleValue{DoubleValue: 0.5}}},
					{Key: "a", Value: &commonpb.AnyValue{Value: &commonpb.AnyValue_ArrayValue{ArrayValue: &commonpb.ArrayValue{
						Values: []*commonpb.AnyValue{{Value: &commonpb.AnyValue_StringValue{StringValue: "x"}}}}}}},
				},
				Events: []*tracepb.Span_Event{{Name: "exception"}},
				Links:  []*tracepb.Span_Link{{TraceId: bytes.Repeat([]byte{0xcd}, 16), SpanId: bytes.Repeat([]byte{0x03}, 8)}},
			}},
		}},
	}}}
}

func checkSpan(t *testing.T, s ReceivedSpan, svc string) {
	t.Helper()
	if s.Service != svc || s.Resource["env"] != "test" || s.Scope != "scope" {
		t.Errorf("resource: %+v", s)
	}
	if s.TraceID != "abababababababababababababababab" || s.SpanID != "0101010101010101" || s.ParentSpanID != "0202020202020202" {
		t.Errorf("ids: %s %s %s", s.TraceID, s.SpanID, s.ParentSpanID)
	}
	if s.Name != "engine createUser" || s.Kind != trace.SpanKindConsumer || s.StatusCode != codes.Error || s.StatusMessage != "boom" {
		t.Errorf("span: %+v", s)
	}
	if s.End.Sub(s.Start) != 5 {
		t.Errorf("times %v %v", s.Start, s.End)
	}
	a := s.Attributes
	if a["s"] != "v" || a["b"] != true || a["i"] != int64(42) || a["f"] != 0.5 || len(a["a"].([]any)) != 1 {
		t.Errorf("attributes %v", a)
	}
	if len(s.Events) != 1 || len(s.Links) != 1 || s.Links[0].TraceID != "cdcdcdcdcdcdcdcdcdcdcdcdcdcdcdcd" {
		t.Errorf("events %v links %v", s.Events, s.Links)
	}
}

func post(t *testing.T, url string, body []byte, header map[string]string) int {
	t.Helper()
	req, err := http.NewRequestWithContext(otlpContext(t), http.MethodPost, url, bytes.NewReader(body))
	if err != nil {
		t.Fatal(err)
	}
	for k, v := range header {
		req.Header.Set(k, v)
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	_ = resp.Body.Close()
	return resp.StatusCode
}

func TestOTLPReceiverHTTP(t *testing.T) {
	t.Parallel()
	r := StartOTLPReceiver(t)
	body, err := proto.Marshal(export("svc-http"))
	if err != nil {
		t.Fatal(err)
	}
	pbHeader := map[string]string{"Content-Type": "application/x-protobuf", "X-Tenant": "acme"}
	if code := post(t, r.TracesEndpoint(), body, pbHeader); code != http.StatusOK {
		t.Fatalf("status %d", code)
	}
	var zipped bytes.Buffer
	zw := gzip.NewWriter(&zipped)
	_, _ = zw.Write(body)
	_ = zw.Close()
	if code := post(t, r.TracesEndpoint(), zipped.Bytes(), map[string]string{
		"Content-Type": "application/x-protobuf", "Content-Encoding": "gzip",
	}); code != http.StatusOK {
		t.Fatalf("gzip: status %d", code)
	}
	spans, err := r.WaitSpans(otlpContext(t), func(s []ReceivedSpan) bool { return len(s) == 2 })
	if err != nil {
		t.Fatal(err)
	}
	for _, s := range spans {
		checkSpan(t, s, "svc-http")
	}
	if r.Exports() != 2 || len(SpansOf(spans, spans[0].TraceID)) != 2 {
		t.Errorf("exports %d", r.Exports())
	}

	for _, tc := range []struct {
		header map[string]string
		body   []byte
		want   int
	}{
		{map[string]string{"Content-Type": "application/json"}, []byte("{}"), http.StatusUnsupportedMediaType},
		{pbHeader, []byte("not protobuf"), http.StatusBadRequest},
	} {
		if code := post(t, r.TracesEndpoint(), tc.body, tc.header); code != tc.want {
			t.Errorf("%v: status %d, want %d", tc.header, code, tc.want)
		}
	}
	r.Fail(http.StatusServiceUnavailable)
	if code := post(t, r.TracesEndpoint(), body, pbHeader); code != http.StatusServiceUnavailable {
		t.Errorf("failing: status %d", code)
	}
	if r.Refused() != 1 || len(r.Spans()) != 2 || r.Header("x-tenant") != "acme" {
		t.Errorf("refused %d, spans %d", r.Refused(), len(r.Spans()))
	}
}

func TestOTLPReceiverGRPC(t *testing.T) {
	t.Parallel()
	r := StartOTLPReceiver(t)
	conn, err := grpc.NewClient(r.GRPCEndpoint()[len("http://"):], grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	client := coltracepb.NewTraceServiceClient(conn)
	ctx := metadata.AppendToOutgoingContext(otlpContext(t), "x-tenant", "acme")
	if _, err := client.Export(ctx, export("svc-grpc")); err != nil {
		t.Fatal(err)
	}
	spans, err := r.WaitSpans(otlpContext(t), func(s []ReceivedSpan) bool { return len(s) == 1 })
	if err != nil {
		t.Fatal(err)
	}
	checkSpan(t, spans[0], "svc-grpc")
	if r.Header("x-tenant") != "acme" {
		t.Errorf("metadata x-tenant %q", r.Header("x-tenant"))
	}
	r.Fail(http.StatusServiceUnavailable)
	_, err = client.Export(ctx, export("svc-grpc"))
	if status.Code(err) != grpccodes.Unavailable {
		t.Errorf("failing: %v, want Unavailable", err)
	}
}

// TestWaitSpansEndsWithContext: a condition that never holds returns what
// arrived, with the context's error.
func TestWaitSpansEndsWithContext(t *testing.T) {
	t.Parallel()
	r := StartOTLPReceiver(t)
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	spans, err := r.WaitSpans(ctx, func([]ReceivedSpan) bool { return false })
	if !errors.Is(err, context.Canceled) || len(spans) != 0 {
		t.Errorf("%v, %d spans", err, len(spans))
	}
}
