package testenv

import (
	"compress/gzip"
	"context"
	"encoding/hex"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"go.opentelemetry.io/otel/codes"
	"go.opentelemetry.io/otel/trace"
	coltracepb "go.opentelemetry.io/proto/otlp/collector/trace/v1"
	commonpb "go.opentelemetry.io/proto/otlp/common/v1"
	tracepb "go.opentelemetry.io/proto/otlp/trace/v1"
	"google.golang.org/grpc"
	grpccodes "google.golang.org/grpc/codes"
	_ "google.golang.org/grpc/encoding/gzip" // accept the gzip-compressed exports of OTEL_EXPORTER_OTLP_COMPRESSION=gzip
	"google.golang.org/grpc/metadata"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/proto"
)

// maxOTLPBody bounds one export request the receiver reads.
const maxOTLPBody = 64 << 20

// OTLPReceiver is an OpenTelemetry collector of the test's own: a real
// OTLP/HTTP endpoint (POST /v1/traces, application/x-protobuf, gzip or not)
// and a real OTLP/gRPC one, both on loopback, that decode every export and
// keep its spans. Unlike the SDK's in-memory exporter it proves what goes on
// the wire, from any process: point a binary's OTEL_EXPORTER_OTLP_ENDPOINT
// at Endpoint (or GRPCEndpoint with OTEL_EXPORTER_OTLP_PROTOCOL=grpc). Its
// methods are safe for concurrent use.
type OTLPReceiver struct {
	http     *httptest.Server
	grpcAddr string

	mu      sync.Mutex
	spans   []ReceivedSpan
	exports int           // exports accepted
	refused int           // exports refused by Fail
	failing int           // HTTP status Fail set; 0: accept
	header  http.Header   // of the last export, accepted or not
	arrived chan struct{} // closed and replaced at each accepted export
}

// ReceivedSpan is one span as the receiver decoded it. Ids are lower-case
// hex, "" when absent (ParentSpanID of a root span).
type ReceivedSpan struct {
	Service       string         // service.name of the resource
	Resource      map[string]any // the resource's attributes
	Scope         string         // instrumentation scope name
	TraceID       string
	SpanID        string
	ParentSpanID  string
	TraceState    string
	Name          string
	Kind          trace.SpanKind
	StatusCode    codes.Code
	StatusMessage string
	Start, End    time.Time
	// Attributes hold string, bool, int64, float64, []byte, []any or
	// map[string]any values, as the OTLP AnyValue carried them.
	Attributes map[string]any
	Events     []string // event names, e.g. "exception"
	Links      []ReceivedLink
}

// ReceivedLink is a span link: the span it points to.
type ReceivedLink struct {
	TraceID, SpanID string
	Attributes      map[string]any
}

// StartOTLPReceiver starts a receiver for t on free loopback ports and stops
// it at cleanup.
func StartOTLPReceiver(t testing.TB) *OTLPReceiver {
	t.Helper()
	r := &OTLPReceiver{arrived: make(chan struct{})}
	mux := http.NewServeMux()
	mux.HandleFunc("/v1/traces", r.serveHTTP)
	r.http = httptest.NewServer(mux)
	t.Cleanup(r.http.Close)

	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatalf("otlp receiver: %v", err)
	}
	srv := grpc.NewServer()
	coltracepb.RegisterTraceServiceServer(srv, grpcTraces{r: r})
	served := make(chan struct{})
	go func() {
		defer close(served)
		_ = srv.Serve(ln)
	}()
	t.Cleanup(func() {
		srv.Stop()
		<-served
	})
	r.grpcAddr = ln.Addr().String()
	return r
}

// Endpoint is the OTLP/HTTP base URL, for OTEL_EXPORTER_OTLP_ENDPOINT (the
// exporter appends /v1/traces).
func (r *OTLPReceiver) Endpoint() string { return r.http.URL }

// TracesEndpoint is the full OTLP/HTTP URL, for
// OTEL_EXPORTER_OTLP_TRACES_ENDPOINT.
func (r *OTLPReceiver) TracesEndpoint() string { return r.http.URL + "/v1/traces" }

// GRPCEndpoint is the OTLP/gRPC endpoint (plaintext), for
// OTEL_EXPORTER_OTLP_ENDPOINT with OTEL_EXPORTER_OTLP_PROTOCOL=grpc.
func (r *OTLPReceiver) GRPCEndpoint() string { return "http://" + r.grpcAddr }

// Fail makes the receiver refuse every export from now on with status (an
// HTTP status; gRPC gets the matching code), as a collector that is
// overloaded or broken does. Fail(0) accepts exports again.
func (r *OTLPReceiver) Fail(status int) {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.failing = status
}

// Spans returns every span received so far, in arrival order.
func (r *OTLPReceiver) Spans() []ReceivedSpan {
	r.mu.Lock()
	defer r.mu.Unlock()
	return slices.Clone(r.spans)
}

// Exports is the number of exports accepted.
func (r *OTLPReceiver) Exports() int {
	r.mu.Lock()
	defer r.mu.Unlock()
	return r.exports
}

// Refused is the number of exports refused because of Fail.
func (r *OTLPReceiver) Refused() int {
	r.mu.Lock()
	defer r.mu.Unlock()
	return r.refused
}

// Header returns a header (gRPC: metadata, lower-cased) of the last export.
func (r *OTLPReceiver) Header(name string) string {
	r.mu.Lock()
	defer r.mu.Unlock()
	return r.header.Get(name)
}

// WaitSpans waits until cond holds for the spans received so far, checking
// after each export, and returns them; or returns them with an error when
// ctx ends first.
func (r *OTLPReceiver) WaitSpans(ctx context.Context, cond func([]ReceivedSpan) bool) ([]ReceivedSpan, error) {
	for {
		r.mu.Lock()
		spans, arrived := slices.Clone(r.spans), r.arrived
		r.mu.Unlock()
		if cond(spans) {
			return spans, nil
		}
		select {
		case <-arrived:
		case <-ctx.Done():
			return spans, fmt.Errorf("waiting for spans (%d received): %w", len(spans), ctx.Err())
		}
	}
}

// SpansOf returns the spans of spans in trace traceID (hex).
func SpansOf(spans []ReceivedSpan, traceID string) []ReceivedSpan {
	var out []ReceivedSpan
	for _, s := range spans {
		if s.TraceID == traceID {
			out = append(out, s)
		}
	}
	return out
}

// receive records an export, unless the receiver is failing: then it
// returns the status to refuse it with.
func (r *OTLPReceiver) receive(req *coltracepb.ExportTraceServiceRequest, header http.Header) int {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.header = header
	if r.failing != 0 {
		r.refused++
		return r.failing
	}
	r.exports++
	r.spans = append(r.spans, decodeSpans(req)...)
	close(r.arrived)
	r.arrived = make(chan struct{})
	return http.StatusOK
}

func (r *OTLPReceiver) serveHTTP(w http.ResponseWriter, req *http.Request) {
	if req.Method != http.MethodPost {
		http.Error(w, "POST only", http.StatusMethodNotAllowed)
		return
	}
	if ct := req.Header.Get("Content-Type"); ct != "application/x-protobuf" {
		http.Error(w, "this receiver decodes application/x-protobuf only, not "+ct, http.StatusUnsupportedMediaType)
		return
	}
	var body io.Reader = http.MaxBytesReader(w, req.Body, maxOTLPBody)
	switch enc := req.Header.Get("Content-Encoding"); enc {
	case "", "identity":
	case "gzip":
		gz, err := gzip.NewReader(body)
		if err != nil {
			http.Error(w, "gzip: "+err.Error(), http.StatusBadRequest)
			return
		}
		defer gz.Close()
		body = io.LimitReader(gz, maxOTLPBody)
	default:
		http.Error(w, "unsupported Content-Encoding "+enc, http.StatusUnsupportedMediaType)
		return
	}
	raw, err := io.ReadAll(body)
	if err != nil {
		http.Error(w, "read: "+err.Error(), http.StatusBadRequest)
		return
	}
	var export coltracepb.ExportTraceServiceRequest
	if err := proto.Unmarshal(raw, &export); err != nil {
		http.Error(w, "decode: "+err.Error(), http.StatusBadRequest)
		return
	}
	if code := r.receive(&export, req.Header.Clone()); code != http.StatusOK {
		http.Error(w, "refused by the test", code)
		return
	}
	resp, err := proto.Marshal(&coltracepb.ExportTraceServiceResponse{})
	if err != nil {
		http.Error(w, err.Error(), http.StatusInternalServerError)
		return
	}
	w.Header().Set("Content-Type", "application/x-protobuf")
	_, _ = w.Write(resp)
}

// grpcTraces is the receiver's gRPC TraceService.
type grpcTraces struct {
	coltracepb.UnimplementedTraceServiceServer
	r *OTLPReceiver
}

func (g grpcTraces) Export(ctx context.Context, req *coltracepb.ExportTraceServiceRequest) (*coltracepb.ExportTraceServiceResponse, error) {
	md, _ := metadata.FromIncomingContext(ctx)
	header := http.Header{}
	for k, vs := range md {
		for _, v := range vs {
			header.Add(k, v)
		}
	}
	if code := g.r.receive(req, header); code != http.StatusOK {
		return nil, status.Error(grpcCode(code), "refused by the test")
	}
	return &coltracepb.ExportTraceServiceResponse{}, nil
}

// grpcCode maps an HTTP status to the gRPC code a collector would answer,
// so that a failing receiver is retried (or not) alike on both protocols.
func grpcCode(httpStatus int) grpccodes.Code {
	switch httpStatus {
	case http.StatusBadRequest:
		return grpccodes.InvalidArgument
	case http.StatusUnauthorized:
		return grpccodes.Unauthenticated
	case http.StatusForbidden:
		return grpccodes.PermissionDenied
	case http.StatusTooManyRequests, http.StatusBadGateway, http.StatusServiceUnavailable, http.StatusGatewayTimeout:
		return grpccodes.Unavailable
	default:
		return grpccodes.Internal
	}
}

// decodeSpans flattens an export into its spans.
func decodeSpans(req *coltracepb.ExportTraceServiceRequest) []ReceivedSpan {
	var out []ReceivedSpan
	for _, rs := range req.GetResourceSpans() {
		res := attributes(rs.GetResource().GetAttributes())
		service, _ := res["service.name"].(string)
		for _, ss := range rs.GetScopeSpans() {
			for _, s := range ss.GetSpans() {
				out = append(out, ReceivedSpan{
					Service:       service,
					Resource:      res,
					Scope:         ss.GetScope().GetName(),
					TraceID:       hexID(s.GetTraceId()),
					SpanID:        hexID(s.GetSpanId()),
					ParentSpanID:  hexID(s.GetParentSpanId()),
					TraceState:    s.GetTraceState(),
					Name:          s.GetName(),
					Kind:          trace.SpanKind(s.GetKind()), // the OTLP enum and the API's share their numbers
					StatusCode:    statusCode(s.GetStatus().GetCode()),
					StatusMessage: s.GetStatus().GetMessage(),
					Start:         time.Unix(0, int64(s.GetStartTimeUnixNano())),
					End:           time.Unix(0, int64(s.GetEndTimeUnixNano())),
					Attributes:    attributes(s.GetAttributes()),
					Events:        eventNames(s.GetEvents()),
					Links:         links(s.GetLinks()),
				})
			}
		}
	}
	return out
}

func hexID(b []byte) string {
	if len(b) == 0 || strings.Trim(string(b), "\x00") == "" {
		return ""
	}
	return hex.EncodeToString(b)
}

// statusCode maps the OTLP status (unset 0, ok 1, error 2) to the API's
// (unset 0, error 1, ok 2).
func statusCode(c tracepb.Status_StatusCode) codes.Code {
	switch c {
	case tracepb.Status_STATUS_CODE_OK:
		return codes.Ok
	case tracepb.Status_STATUS_CODE_ERROR:
		return codes.Error
	default:
		return codes.Unset
	}
}

func attributes(kvs []*commonpb.KeyValue) map[string]any {
	m := make(map[string]any, len(kvs))
	for _, kv := range kvs {
		m[kv.GetKey()] = anyValue(kv.GetValue())
	}
	return m
}

func anyValue(v *commonpb.AnyValue) any {
	switch x := v.GetValue().(type) {
	case *commonpb.AnyValue_StringValue:
		return x.StringValue
	case *commonpb.AnyValue_BoolValue:
		return x.BoolValue
	case *commonpb.AnyValue_IntValue:
		return x.IntValue
	case *commonpb.AnyValue_DoubleValue:
		return x.DoubleValue
	case *commonpb.AnyValue_BytesValue:
		return x.BytesValue
	case *commonpb.AnyValue_ArrayValue:
		out := make([]any, 0, len(x.ArrayValue.GetValues()))
		for _, e := range x.ArrayValue.GetValues() {
			out = append(out, anyValue(e))
		}
		return out
	case *commonpb.AnyValue_KvlistValue:
		return attributes(x.KvlistValue.GetValues())
	default:
		return nil
	}
}

func eventNames(events []*tracepb.Span_Event) []string {
	var out []string
	for _, e := range events {
		out = append(out, e.GetName())
	}
	return out
}

func links(ls []*tracepb.Span_Link) []ReceivedLink {
	var out []ReceivedLink
	for _, l := range ls {
		out = append(out, ReceivedLink{TraceID: hexID(l.GetTraceId()), SpanID: hexID(l.GetSpanId()), Attributes: attributes(l.GetAttributes())})
	}
	return out
}
