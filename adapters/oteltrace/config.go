package oteltrace

import (
	"cmp"
	"errors"
	"fmt"
	"math"
	"net/url"
	"slices"
	"strconv"
	"strings"
	"time"
)

// Protocols of OTEL_EXPORTER_OTLP_PROTOCOL.
const (
	ProtocolHTTPProtobuf = "http/protobuf"
	ProtocolGRPC         = "grpc"
)

// Samplers of OTEL_TRACES_SAMPLER.
const (
	SamplerAlwaysOn                = "always_on"
	SamplerAlwaysOff               = "always_off"
	SamplerTraceIDRatio            = "traceidratio"
	SamplerParentBasedAlwaysOn     = "parentbased_always_on"
	SamplerParentBasedAlwaysOff    = "parentbased_always_off"
	SamplerParentBasedTraceIDRatio = "parentbased_traceidratio"
)

// samplers lists the accepted OTEL_TRACES_SAMPLER values in the order the
// refusal names them.
var samplers = []string{
	SamplerAlwaysOn, SamplerAlwaysOff, SamplerTraceIDRatio,
	SamplerParentBasedAlwaysOn, SamplerParentBasedAlwaysOff, SamplerParentBasedTraceIDRatio,
}

// Defaults applied to the zero fields of Config; they are the
// specification's.
const (
	DefaultProtocol           = ProtocolHTTPProtobuf
	DefaultSampler            = SamplerParentBasedAlwaysOn
	DefaultTimeout            = 10 * time.Second
	DefaultScheduleDelay      = 5 * time.Second
	DefaultExportTimeout      = 30 * time.Second
	DefaultMaxQueueSize       = 2048
	DefaultMaxExportBatchSize = 512
)

// tracesPath is appended to OTEL_EXPORTER_OTLP_ENDPOINT for http/protobuf:
// that variable is the collector's base URL, shared by every signal.
const tracesPath = "/v1/traces"

// Var describes one variable ConfigFromEnv reads, so that a binary can derive
// its flags, help and effective-configuration log from one list.
type Var struct {
	Name    string
	Default string // as the variable would spell it; "" for none or a per-binary default
	Usage   string
	Secret  bool // redact the value in logs: it may carry credentials
}

// Vars lists every variable ConfigFromEnv reads, in documentation order.
// The per-signal OTEL_EXPORTER_OTLP_TRACES_* variants win over their generic
// names. The TLS variables (OTEL_EXPORTER_OTLP_CERTIFICATE,
// _CLIENT_CERTIFICATE, _CLIENT_KEY and their TRACES_ forms) are not listed:
// the exporter reads them from the process environment itself.
var Vars = []Var{
	{Name: "OTEL_SDK_DISABLED", Default: "false", Usage: "true turns tracing off whatever else is set"},
	{Name: "OTEL_EXPORTER_OTLP_ENDPOINT", Usage: "base URL of the OTLP collector (http:// or https://); unset: tracing is off"},
	{Name: "OTEL_EXPORTER_OTLP_TRACES_ENDPOINT", Usage: "full URL spans are sent to, instead of OTEL_EXPORTER_OTLP_ENDPOINT"},
	{Name: "OTEL_EXPORTER_OTLP_PROTOCOL", Default: DefaultProtocol, Usage: "grpc or http/protobuf"},
	{Name: "OTEL_EXPORTER_OTLP_TRACES_PROTOCOL", Usage: "protocol of the spans' exporter, instead of OTEL_EXPORTER_OTLP_PROTOCOL"},
	{Name: "OTEL_EXPORTER_OTLP_HEADERS", Usage: "key=value,... sent with every export (values percent-encoded)", Secret: true},
	{Name: "OTEL_EXPORTER_OTLP_TRACES_HEADERS", Usage: "headers of the spans' exports, instead of OTEL_EXPORTER_OTLP_HEADERS", Secret: true},
	{Name: "OTEL_EXPORTER_OTLP_TIMEOUT", Default: strconv.FormatInt(DefaultTimeout.Milliseconds(), 10), Usage: "milliseconds one export may take, retries included"},
	{Name: "OTEL_EXPORTER_OTLP_TRACES_TIMEOUT", Usage: "timeout of the spans' exports, instead of OTEL_EXPORTER_OTLP_TIMEOUT"},
	{Name: "OTEL_EXPORTER_OTLP_COMPRESSION", Default: "none", Usage: "gzip or none"},
	{Name: "OTEL_EXPORTER_OTLP_TRACES_COMPRESSION", Usage: "compression of the spans' exports, instead of OTEL_EXPORTER_OTLP_COMPRESSION"},
	{Name: "OTEL_SERVICE_NAME", Usage: "service.name of the spans (default: the binary's name)"},
	{Name: "OTEL_RESOURCE_ATTRIBUTES", Usage: "key=value,... added to the spans' resource (values percent-encoded)"},
	{Name: "OTEL_TRACES_SAMPLER", Default: DefaultSampler, Usage: strings.Join(samplers, ", ")},
	{Name: "OTEL_TRACES_SAMPLER_ARG", Usage: "sampling ratio (0 to 1) of the traceidratio samplers (default 1)"},
	{Name: "OTEL_BSP_SCHEDULE_DELAY", Default: strconv.FormatInt(DefaultScheduleDelay.Milliseconds(), 10), Usage: "milliseconds between two exports"},
	{Name: "OTEL_BSP_EXPORT_TIMEOUT", Default: strconv.FormatInt(DefaultExportTimeout.Milliseconds(), 10), Usage: "milliseconds an export may take before it is abandoned"},
	{Name: "OTEL_BSP_MAX_QUEUE_SIZE", Default: strconv.Itoa(DefaultMaxQueueSize), Usage: "spans waiting for export beyond which new ones are dropped (and counted)"},
	{Name: "OTEL_BSP_MAX_EXPORT_BATCH_SIZE", Default: strconv.Itoa(DefaultMaxExportBatchSize), Usage: "spans per export, at most OTEL_BSP_MAX_QUEUE_SIZE"},
}

// Config is the tracing configuration: the OTEL_* variables, parsed. The
// zero value is tracing off, and every zero field means its default, so a
// Config written in code needs only Endpoint (and ServiceName) to export.
type Config struct {
	// Disabled (OTEL_SDK_DISABLED) turns tracing off even with an endpoint.
	Disabled bool
	// Endpoint is the URL spans are sent to, path included for
	// http/protobuf; for grpc only scheme (http: plaintext, https: TLS),
	// host and port count. ConfigFromEnv takes
	// OTEL_EXPORTER_OTLP_TRACES_ENDPOINT as is, or appends /v1/traces to
	// OTEL_EXPORTER_OTLP_ENDPOINT for http/protobuf. Empty: tracing is off.
	Endpoint string
	// Protocol is ProtocolHTTPProtobuf (the default) or ProtocolGRPC.
	Protocol string
	// Headers are sent with every export, typically a collector's API key.
	Headers Headers
	// Timeout bounds one export, its retries included (default 10 s).
	Timeout time.Duration
	// Compression is "gzip" or "none" (the default).
	Compression string
	// ServiceName is the resource's service.name: OTEL_SERVICE_NAME, else
	// service.name in OTEL_RESOURCE_ATTRIBUTES, else the binary's default.
	ServiceName string
	// ResourceAttributes (OTEL_RESOURCE_ATTRIBUTES) describe where the spans
	// come from; they may override service.version, not service.name.
	ResourceAttributes map[string]string
	// Sampler is one of the Sampler* constants (default
	// parentbased_always_on): a request whose caller sampled its trace is
	// traced, whatever happens to it.
	Sampler string
	// SamplerArg is OTEL_TRACES_SAMPLER_ARG as given: the ratio of the
	// traceidratio samplers, 1 when empty; ignored by the others.
	SamplerArg string
	// ScheduleDelay, ExportTimeout, MaxQueueSize and MaxExportBatchSize
	// (OTEL_BSP_*) tune the batch span processor.
	ScheduleDelay      time.Duration
	ExportTimeout      time.Duration
	MaxQueueSize       int
	MaxExportBatchSize int

	// src names the variable each per-signal setting came from, so that a
	// refusal names the variable the operator actually set.
	src sources
}

// sources are the variables the per-signal settings were read from; empty
// fields mean the generic names.
type sources struct {
	endpoint, protocol, headers, timeout, compression string
}

func (s sources) name(field, generic string) string {
	if field != "" {
		return field
	}
	return generic
}

// Enabled reports whether spans are exported: an endpoint is set and the
// SDK is not disabled. Otherwise New returns the no-op provider.
func (c Config) Enabled() bool { return !c.Disabled && c.Endpoint != "" }

// Headers are export headers; their values are credentials, so every
// rendering of Headers (fmt, %#v, JSON) shows the keys only.
type Headers map[string]string

// String lists the keys with the values redacted.
func (h Headers) String() string {
	keys := make([]string, 0, len(h))
	for k := range h {
		keys = append(keys, k+"=REDACTED")
	}
	slices.Sort(keys)
	return strings.Join(keys, ",")
}

// GoString redacts the values in %#v.
func (h Headers) GoString() string { return strconv.Quote(h.String()) }

// MarshalJSON redacts the values in JSON and zap's reflection encoder.
func (h Headers) MarshalJSON() ([]byte, error) { return []byte(strconv.Quote(h.String())), nil }

// ConfigFromEnv reads the variables of Vars through lookup (the signature
// of os.LookupEnv; an empty value counts as unset, as the specification
// says) and validates the result. defaultServiceName is the service.name
// when neither OTEL_SERVICE_NAME nor OTEL_RESOURCE_ATTRIBUTES names one.
// The error lists every problem, each naming its variable; with an error,
// the Config holds what could be read.
func ConfigFromEnv(lookup func(string) (string, bool), defaultServiceName string) (Config, error) {
	var errs []error
	bad := func(name, format string, args ...any) {
		errs = append(errs, fmt.Errorf("%s: "+format, append([]any{name}, args...)...))
	}
	get := func(name string) string {
		v, _ := lookup(name)
		return strings.TrimSpace(v)
	}
	// pick returns the per-signal variable when set, else the generic one,
	// with the name of the variable it read.
	pick := func(generic, traces string) (string, string) {
		if v := get(traces); v != "" {
			return v, traces
		}
		return get(generic), generic
	}
	millis := func(name, raw string) time.Duration {
		if raw == "" {
			return 0
		}
		n, err := strconv.ParseInt(raw, 10, 64)
		if err != nil || n <= 0 || n > math.MaxInt64/int64(time.Millisecond) {
			bad(name, "%q is not a positive number of milliseconds", raw)
			return 0
		}
		return time.Duration(n) * time.Millisecond
	}
	count := func(name string) int {
		raw := get(name)
		if raw == "" {
			return 0
		}
		n, err := strconv.Atoi(raw)
		if err != nil || n <= 0 {
			bad(name, "%q is not a positive integer", raw)
			return 0
		}
		return n
	}

	var c Config
	switch raw := get("OTEL_SDK_DISABLED"); strings.ToLower(raw) {
	case "", "false":
	case "true":
		c.Disabled = true
	default:
		bad("OTEL_SDK_DISABLED", "%q is not true or false", raw)
	}

	protocol, protocolVar := pick("OTEL_EXPORTER_OTLP_PROTOCOL", "OTEL_EXPORTER_OTLP_TRACES_PROTOCOL")
	c.Protocol, c.src.protocol = protocol, protocolVar

	endpoint, endpointVar := pick("OTEL_EXPORTER_OTLP_ENDPOINT", "OTEL_EXPORTER_OTLP_TRACES_ENDPOINT")
	c.Endpoint, c.src.endpoint = endpoint, endpointVar
	if endpointVar == "OTEL_EXPORTER_OTLP_ENDPOINT" && endpoint != "" && c.protocol() == ProtocolHTTPProtobuf {
		// The base URL's path, if any, is kept: a collector behind a
		// reverse proxy at /otlp receives at /otlp/v1/traces.
		if u, err := url.Parse(endpoint); err == nil {
			u.Path = strings.TrimSuffix(u.Path, "/") + tracesPath
			u.RawPath = ""
			c.Endpoint = u.String()
		} // else Validate names the variable
	}

	headers, headersVar := pick("OTEL_EXPORTER_OTLP_HEADERS", "OTEL_EXPORTER_OTLP_TRACES_HEADERS")
	c.src.headers = headersVar
	if h, err := parseList(headers, false); err != nil {
		bad(headersVar, "%v", err)
	} else if h != nil {
		c.Headers = h
	}

	timeout, timeoutVar := pick("OTEL_EXPORTER_OTLP_TIMEOUT", "OTEL_EXPORTER_OTLP_TRACES_TIMEOUT")
	c.Timeout, c.src.timeout = millis(timeoutVar, timeout), timeoutVar

	compression, compressionVar := pick("OTEL_EXPORTER_OTLP_COMPRESSION", "OTEL_EXPORTER_OTLP_TRACES_COMPRESSION")
	c.Compression, c.src.compression = compression, compressionVar

	attrs, err := parseList(get("OTEL_RESOURCE_ATTRIBUTES"), true)
	if err != nil {
		bad("OTEL_RESOURCE_ATTRIBUTES", "%v", err)
	}
	c.ResourceAttributes = attrs
	c.ServiceName = get("OTEL_SERVICE_NAME")
	if c.ServiceName == "" {
		c.ServiceName = attrs["service.name"]
	}
	if c.ServiceName == "" {
		c.ServiceName = defaultServiceName
	}

	c.Sampler = get("OTEL_TRACES_SAMPLER")
	c.SamplerArg = get("OTEL_TRACES_SAMPLER_ARG")

	c.ScheduleDelay = millis("OTEL_BSP_SCHEDULE_DELAY", get("OTEL_BSP_SCHEDULE_DELAY"))
	c.ExportTimeout = millis("OTEL_BSP_EXPORT_TIMEOUT", get("OTEL_BSP_EXPORT_TIMEOUT"))
	c.MaxQueueSize = count("OTEL_BSP_MAX_QUEUE_SIZE")
	c.MaxExportBatchSize = count("OTEL_BSP_MAX_EXPORT_BATCH_SIZE")

	if err := c.Validate(); err != nil {
		errs = append(errs, err)
	}
	return c, errors.Join(errs...)
}

// Validate reports every problem with c, each naming its variable. It
// checks c whether or not tracing is enabled: a bad value is refused even
// where it has no effect yet, as every other setting is.
func (c Config) Validate() error {
	var errs []error
	bad := func(name, format string, args ...any) {
		errs = append(errs, fmt.Errorf("%s: "+format, append([]any{name}, args...)...))
	}
	switch c.protocol() {
	case ProtocolHTTPProtobuf, ProtocolGRPC:
	case "http/json":
		bad(c.src.name(c.src.protocol, "OTEL_EXPORTER_OTLP_PROTOCOL"), "http/json is not supported: use grpc or http/protobuf")
	default:
		bad(c.src.name(c.src.protocol, "OTEL_EXPORTER_OTLP_PROTOCOL"), "%q is not one of grpc, http/protobuf", c.Protocol)
	}
	if c.Endpoint != "" {
		if err := checkEndpoint(c.Endpoint); err != nil {
			bad(c.src.name(c.src.endpoint, "OTEL_EXPORTER_OTLP_ENDPOINT"), "%v", err)
		}
	}
	headersVar := c.src.name(c.src.headers, "OTEL_EXPORTER_OTLP_HEADERS")
	for _, k := range sortedKeys(c.Headers) {
		if !validHeaderName(k) {
			bad(headersVar, "%q is not a valid header name", k)
		}
		if strings.ContainsFunc(c.Headers[k], func(r rune) bool { return r < ' ' && r != '\t' || r == 0x7f }) {
			// The value is a credential: name the header only.
			bad(headersVar, "the value of %s holds control characters", k)
		}
	}
	if c.Timeout < 0 {
		bad(c.src.name(c.src.timeout, "OTEL_EXPORTER_OTLP_TIMEOUT"), "must not be negative")
	}
	switch c.Compression {
	case "", "none", "gzip":
	default:
		bad(c.src.name(c.src.compression, "OTEL_EXPORTER_OTLP_COMPRESSION"), "%q is not one of gzip, none", c.Compression)
	}
	if c.Enabled() && c.ServiceName == "" {
		bad("OTEL_SERVICE_NAME", "must not be empty")
	}
	for _, k := range sortedKeys(c.ResourceAttributes) {
		if k == "" {
			bad("OTEL_RESOURCE_ATTRIBUTES", "a key is empty")
		}
	}
	switch s := c.sampler(); {
	case !slices.Contains(samplers, s):
		bad("OTEL_TRACES_SAMPLER", "%q is not one of %s", c.Sampler, strings.Join(samplers, ", "))
	case s == SamplerTraceIDRatio || s == SamplerParentBasedTraceIDRatio:
		if _, err := c.ratio(); err != nil {
			bad("OTEL_TRACES_SAMPLER_ARG", "%v", err)
		}
	}
	for _, d := range []struct {
		name string
		v    time.Duration
	}{{"OTEL_BSP_SCHEDULE_DELAY", c.ScheduleDelay}, {"OTEL_BSP_EXPORT_TIMEOUT", c.ExportTimeout}} {
		if d.v < 0 {
			bad(d.name, "must not be negative")
		}
	}
	if c.MaxQueueSize < 0 {
		bad("OTEL_BSP_MAX_QUEUE_SIZE", "must not be negative")
	}
	if c.MaxExportBatchSize < 0 {
		bad("OTEL_BSP_MAX_EXPORT_BATCH_SIZE", "must not be negative")
	} else if q := c.maxQueueSize(); c.maxExportBatchSize() > q {
		bad("OTEL_BSP_MAX_EXPORT_BATCH_SIZE", "must be at most OTEL_BSP_MAX_QUEUE_SIZE (%d)", q)
	}
	return errors.Join(errs...)
}

// RedactedEndpoint returns the endpoint with any password masked, for logs.
func (c Config) RedactedEndpoint() string {
	u, err := url.Parse(c.Endpoint)
	if err != nil {
		return "(unparsable)"
	}
	return u.Redacted()
}

func (c Config) protocol() string { return cmp.Or(c.Protocol, DefaultProtocol) }
func (c Config) sampler() string  { return cmp.Or(c.Sampler, DefaultSampler) }

// ratio is the traceidratio samplers' ratio.
func (c Config) ratio() (float64, error) {
	if c.SamplerArg == "" {
		return 1, nil
	}
	r, err := strconv.ParseFloat(c.SamplerArg, 64)
	if err != nil || !(r >= 0 && r <= 1) { // also refuses NaN
		return 0, fmt.Errorf("%q is not a ratio between 0 and 1", c.SamplerArg)
	}
	return r, nil
}

// The settings in force: the defaults for zero fields.

func (c Config) timeout() time.Duration       { return cmp.Or(c.Timeout, DefaultTimeout) }
func (c Config) scheduleDelay() time.Duration { return cmp.Or(c.ScheduleDelay, DefaultScheduleDelay) }
func (c Config) exportTimeout() time.Duration { return cmp.Or(c.ExportTimeout, DefaultExportTimeout) }
func (c Config) maxQueueSize() int            { return cmp.Or(c.MaxQueueSize, DefaultMaxQueueSize) }

// maxExportBatchSize is never above the queue: the default batch shrinks to
// a small queue the operator set.
func (c Config) maxExportBatchSize() int {
	return cmp.Or(c.MaxExportBatchSize, min(DefaultMaxExportBatchSize, c.maxQueueSize()))
}

// checkEndpoint accepts an absolute http or https URL with a host.
func checkEndpoint(raw string) error {
	u, err := url.Parse(raw)
	if err != nil {
		return errors.New("not a URL")
	}
	if u.Scheme != "http" && u.Scheme != "https" {
		return fmt.Errorf("scheme must be http or https, not %q", u.Scheme)
	}
	if u.Host == "" {
		return errors.New("the URL has no host")
	}
	return nil
}

// parseList parses the specification's key=value,key=value lists
// (OTEL_RESOURCE_ATTRIBUTES, OTEL_EXPORTER_OTLP_HEADERS): values are
// percent-decoded, blanks around items trimmed. Its errors quote the offending
// item only when echo is set: a header's value is a credential.
func parseList(raw string, echo bool) (map[string]string, error) {
	if raw == "" {
		return nil, nil
	}
	quote := func(item string) string {
		if echo {
			return strconv.Quote(item)
		}
		if k, _, ok := strings.Cut(item, "="); ok {
			return "the item of " + strconv.Quote(strings.TrimSpace(k))
		}
		return "an item"
	}
	out := map[string]string{}
	var errs []error
	for item := range strings.SplitSeq(raw, ",") {
		item = strings.TrimSpace(item)
		if item == "" {
			continue
		}
		k, v, ok := strings.Cut(item, "=")
		k, v = strings.TrimSpace(k), strings.TrimSpace(v)
		if !ok || k == "" {
			errs = append(errs, fmt.Errorf("%s is not key=value", quote(item)))
			continue
		}
		dv, err := url.PathUnescape(v)
		if err != nil {
			errs = append(errs, fmt.Errorf("%s is not percent-encoded", quote(item)))
			continue
		}
		out[k] = dv
	}
	return out, errors.Join(errs...)
}

// validHeaderName reports whether k is an HTTP token (RFC 9110).
func validHeaderName(k string) bool {
	if k == "" {
		return false
	}
	for _, r := range k {
		if r > 0x7e || r <= ' ' || strings.ContainsRune(`"(),/:;<=>?@[\]{}`, r) {
			return false
		}
	}
	return true
}

func sortedKeys(m map[string]string) []string {
	keys := make([]string, 0, len(m))
	for k := range m {
		keys = append(keys, k)
	}
	slices.Sort(keys)
	return keys
}
