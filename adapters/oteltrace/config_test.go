package oteltrace

import (
	"encoding/json"
	"fmt"
	"strings"
	"testing"
	"time"
)

func lookup(env map[string]string) func(string) (string, bool) {
	return func(name string) (string, bool) {
		v, ok := env[name]
		return v, ok
	}
}

// TestConfigOffByDefault: no variable, no tracing, and nothing to refuse.
func TestConfigOffByDefault(t *testing.T) {
	t.Parallel()
	c, err := ConfigFromEnv(lookup(nil), "ensure-user")
	if err != nil {
		t.Fatal(err)
	}
	if c.Enabled() {
		t.Errorf("enabled without an endpoint: %+v", c)
	}
	if c.ServiceName != "ensure-user" || c.protocol() != ProtocolHTTPProtobuf || c.sampler() != SamplerParentBasedAlwaysOn {
		t.Errorf("defaults: %+v", c)
	}
	if (Config{}).Validate() != nil || (Config{}).Enabled() {
		t.Error("the zero Config is not valid and off")
	}
}

func TestConfigFromEnv(t *testing.T) {
	t.Parallel()
	for _, tc := range []struct {
		name  string
		env   map[string]string
		check func(t *testing.T, c Config)
	}{
		{"base endpoint gets the traces path", map[string]string{"OTEL_EXPORTER_OTLP_ENDPOINT": "http://collector:4318"},
			func(t *testing.T, c Config) {
				if c.Endpoint != "http://collector:4318/v1/traces" || !c.Enabled() {
					t.Errorf("endpoint %q, enabled %v", c.Endpoint, c.Enabled())
				}
			}},
		{"base endpoint keeps its path", map[string]string{"OTEL_EXPORTER_OTLP_ENDPOINT": "https://proxy/otlp/"},
			func(t *testing.T, c Config) {
				if c.Endpoint != "https://proxy/otlp/v1/traces" {
					t.Errorf("endpoint %q", c.Endpoint)
				}
			}},
		{"traces endpoint as is, and wins", map[string]string{
			"OTEL_EXPORTER_OTLP_ENDPOINT":        "http://generic:4318",
			"OTEL_EXPORTER_OTLP_TRACES_ENDPOINT": "http://traces:4318/custom"},
			func(t *testing.T, c Config) {
				if c.Endpoint != "http://traces:4318/custom" {
					t.Errorf("endpoint %q", c.Endpoint)
				}
			}},
		{"grpc endpoint untouched", map[string]string{
			"OTEL_EXPORTER_OTLP_ENDPOINT": "http://collector:4317", "OTEL_EXPORTER_OTLP_PROTOCOL": "grpc"},
			func(t *testing.T, c Config) {
				if c.Endpoint != "http://collector:4317" || c.Protocol != ProtocolGRPC {
					t.Errorf("endpoint %q protocol %q", c.Endpoint, c.Protocol)
				}
			}},
		{"traces protocol wins", map[string]string{
			"OTEL_EXPORTER_OTLP_PROTOCOL": "grpc", "OTEL_EXPORTER_OTLP_TRACES_PROTOCOL": "http/protobuf"},
			func(t *testing.T, c Config) {
				if c.Protocol != ProtocolHTTPProtobuf {
					t.Errorf("protocol %q", c.Protocol)
				}
			}},
		{"disabled wins over an endpoint", map[string]string{
			"OTEL_EXPORTER_OTLP_ENDPOINT": "http://collector:4318", "OTEL_SDK_DISABLED": "TRUE"},
			func(t *testing.T, c Config) {
				if c.Enabled() || !c.Disabled {
					t.Errorf("enabled %v disabled %v", c.Enabled(), c.Disabled)
				}
			}},
		{"empty means unset", map[string]string{"OTEL_EXPORTER_OTLP_ENDPOINT": "", "OTEL_SERVICE_NAME": " ", "OTEL_SDK_DISABLED": ""},
			func(t *testing.T, c Config) {
				if c.Enabled() || c.ServiceName != "ensure-user" {
					t.Errorf("%+v", c)
				}
			}},
		{"service name from the resource", map[string]string{"OTEL_RESOURCE_ATTRIBUTES": "service.name=from-attrs,deployment.environment.name=staging"},
			func(t *testing.T, c Config) {
				if c.ServiceName != "from-attrs" || c.ResourceAttributes["deployment.environment.name"] != "staging" {
					t.Errorf("%+v", c)
				}
			}},
		{"OTEL_SERVICE_NAME wins", map[string]string{"OTEL_RESOURCE_ATTRIBUTES": "service.name=from-attrs", "OTEL_SERVICE_NAME": "named"},
			func(t *testing.T, c Config) {
				if c.ServiceName != "named" {
					t.Errorf("service %q", c.ServiceName)
				}
			}},
		{"percent-decoded lists", map[string]string{
			"OTEL_RESOURCE_ATTRIBUTES":   " team = a%20b , ,region=eu%2Cwest",
			"OTEL_EXPORTER_OTLP_HEADERS": "Authorization=Bearer%20s3cret,x-tenant=7"},
			func(t *testing.T, c Config) {
				if c.ResourceAttributes["team"] != "a b" || c.ResourceAttributes["region"] != "eu,west" || len(c.ResourceAttributes) != 2 {
					t.Errorf("attributes %q", c.ResourceAttributes)
				}
				if c.Headers["Authorization"] != "Bearer s3cret" || c.Headers["x-tenant"] != "7" {
					t.Errorf("headers %d", len(c.Headers))
				}
			}},
		{"traces headers win", map[string]string{
			"OTEL_EXPORTER_OTLP_HEADERS": "a=1", "OTEL_EXPORTER_OTLP_TRACES_HEADERS": "b=2"},
			func(t *testing.T, c Config) {
				if len(c.Headers) != 1 || c.Headers["b"] != "2" {
					t.Errorf("headers %v", c.Headers)
				}
			}},
		{"durations in milliseconds", map[string]string{
			"OTEL_EXPORTER_OTLP_TIMEOUT": "2500", "OTEL_EXPORTER_OTLP_TRACES_TIMEOUT": "1500",
			"OTEL_BSP_SCHEDULE_DELAY": "100", "OTEL_BSP_EXPORT_TIMEOUT": "3000",
			"OTEL_BSP_MAX_QUEUE_SIZE": "10", "OTEL_BSP_MAX_EXPORT_BATCH_SIZE": "5"},
			func(t *testing.T, c Config) {
				if c.Timeout != 1500*time.Millisecond || c.ScheduleDelay != 100*time.Millisecond ||
					c.ExportTimeout != 3*time.Second || c.MaxQueueSize != 10 || c.MaxExportBatchSize != 5 {
					t.Errorf("%+v", c)
				}
			}},
		{"small queue shrinks the default batch", map[string]string{"OTEL_BSP_MAX_QUEUE_SIZE": "8"},
			func(t *testing.T, c Config) {
				if c.maxExportBatchSize() != 8 {
					t.Errorf("batch %d", c.maxExportBatchSize())
				}
			}},
		{"ratio sampler", map[string]string{"OTEL_TRACES_SAMPLER": "parentbased_traceidratio", "OTEL_TRACES_SAMPLER_ARG": "0.25"},
			func(t *testing.T, c Config) {
				if r, err := c.ratio(); r != 0.25 || err != nil {
					t.Errorf("ratio %v, %v", r, err)
				}
			}},
		{"sampler arg ignored by other samplers", map[string]string{"OTEL_TRACES_SAMPLER": "always_on", "OTEL_TRACES_SAMPLER_ARG": "whatever"},
			func(t *testing.T, c Config) {}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			c, err := ConfigFromEnv(lookup(tc.env), "ensure-user")
			if err != nil {
				t.Fatal(err)
			}
			tc.check(t, c)
		})
	}
}

// TestConfigRefusals: every refusal names its variable, and a header's
// value never appears in the error.
func TestConfigRefusals(t *testing.T) {
	t.Parallel()
	for _, tc := range []struct {
		env  map[string]string
		want string
	}{
		{map[string]string{"OTEL_SDK_DISABLED": "yes"}, "OTEL_SDK_DISABLED"},
		{map[string]string{"OTEL_EXPORTER_OTLP_ENDPOINT": "collector:4318"}, "OTEL_EXPORTER_OTLP_ENDPOINT"},
		{map[string]string{"OTEL_EXPORTER_OTLP_ENDPOINT": "ftp://collector"}, "OTEL_EXPORTER_OTLP_ENDPOINT"},
		{map[string]string{"OTEL_EXPORTER_OTLP_ENDPOINT": "http://"}, "OTEL_EXPORTER_OTLP_ENDPOINT"},
		{map[string]string{"OTEL_EXPORTER_OTLP_ENDPOINT": "http://a b/%zz"}, "OTEL_EXPORTER_OTLP_ENDPOINT"},
		{map[string]string{"OTEL_EXPORTER_OTLP_TRACES_ENDPOINT": "not a url"}, "OTEL_EXPORTER_OTLP_TRACES_ENDPOINT"},
		{map[string]string{"OTEL_EXPORTER_OTLP_PROTOCOL": "http/json"}, "OTEL_EXPORTER_OTLP_PROTOCOL"},
		{map[string]string{"OTEL_EXPORTER_OTLP_PROTOCOL": "udp"}, "OTEL_EXPORTER_OTLP_PROTOCOL"},
		{map[string]string{"OTEL_EXPORTER_OTLP_TRACES_PROTOCOL": "grpcs"}, "OTEL_EXPORTER_OTLP_TRACES_PROTOCOL"},
		{map[string]string{"OTEL_EXPORTER_OTLP_HEADERS": "Authorization"}, "OTEL_EXPORTER_OTLP_HEADERS"},
		{map[string]string{"OTEL_EXPORTER_OTLP_HEADERS": "bad header=s3cret"}, "OTEL_EXPORTER_OTLP_HEADERS"},
		{map[string]string{"OTEL_EXPORTER_OTLP_HEADERS": "x=s3cret%0d%0aInjected: 1"}, "OTEL_EXPORTER_OTLP_HEADERS"},
		{map[string]string{"OTEL_EXPORTER_OTLP_TRACES_HEADERS": "x=s3cret%zz"}, "OTEL_EXPORTER_OTLP_TRACES_HEADERS"},
		{map[string]string{"OTEL_EXPORTER_OTLP_TIMEOUT": "10s"}, "OTEL_EXPORTER_OTLP_TIMEOUT"},
		{map[string]string{"OTEL_EXPORTER_OTLP_TIMEOUT": "0"}, "OTEL_EXPORTER_OTLP_TIMEOUT"},
		{map[string]string{"OTEL_EXPORTER_OTLP_TRACES_TIMEOUT": "-5"}, "OTEL_EXPORTER_OTLP_TRACES_TIMEOUT"},
		{map[string]string{"OTEL_EXPORTER_OTLP_COMPRESSION": "zstd"}, "OTEL_EXPORTER_OTLP_COMPRESSION"},
		{map[string]string{"OTEL_EXPORTER_OTLP_TRACES_COMPRESSION": "br"}, "OTEL_EXPORTER_OTLP_TRACES_COMPRESSION"},
		{map[string]string{"OTEL_RESOURCE_ATTRIBUTES": "team"}, "OTEL_RESOURCE_ATTRIBUTES"},
		{map[string]string{"OTEL_RESOURCE_ATTRIBUTES": "=x"}, "OTEL_RESOURCE_ATTRIBUTES"},
		{map[string]string{"OTEL_RESOURCE_ATTRIBUTES": "team=%g0"}, "OTEL_RESOURCE_ATTRIBUTES"},
		{map[string]string{"OTEL_TRACES_SAMPLER": "sometimes"}, `OTEL_TRACES_SAMPLER: "sometimes" is not one of always_on, always_off, traceidratio, parentbased_always_on, parentbased_always_off, parentbased_traceidratio`},
		{map[string]string{"OTEL_TRACES_SAMPLER": "traceidratio", "OTEL_TRACES_SAMPLER_ARG": "half"}, "OTEL_TRACES_SAMPLER_ARG"},
		{map[string]string{"OTEL_TRACES_SAMPLER": "parentbased_traceidratio", "OTEL_TRACES_SAMPLER_ARG": "1.5"}, "OTEL_TRACES_SAMPLER_ARG"},
		{map[string]string{"OTEL_TRACES_SAMPLER": "traceidratio", "OTEL_TRACES_SAMPLER_ARG": "NaN"}, "OTEL_TRACES_SAMPLER_ARG"},
		{map[string]string{"OTEL_BSP_SCHEDULE_DELAY": "soon"}, "OTEL_BSP_SCHEDULE_DELAY"},
		{map[string]string{"OTEL_BSP_EXPORT_TIMEOUT": "0"}, "OTEL_BSP_EXPORT_TIMEOUT"},
		{map[string]string{"OTEL_BSP_MAX_QUEUE_SIZE": "-1"}, "OTEL_BSP_MAX_QUEUE_SIZE"},
		{map[string]string{"OTEL_BSP_MAX_EXPORT_BATCH_SIZE": "many"}, "OTEL_BSP_MAX_EXPORT_BATCH_SIZE"},
		{map[string]string{"OTEL_BSP_MAX_QUEUE_SIZE": "10", "OTEL_BSP_MAX_EXPORT_BATCH_SIZE": "11"}, "OTEL_BSP_MAX_EXPORT_BATCH_SIZE"},
	} {
		t.Run(fmt.Sprint(tc.env), func(t *testing.T) {
			t.Parallel()
			_, err := ConfigFromEnv(lookup(tc.env), "ensure-user")
			if err == nil {
				t.Fatal("accepted")
			}
			if !strings.Contains(err.Error(), tc.want) {
				t.Errorf("error does not name %s: %v", tc.want, err)
			}
			if strings.Contains(err.Error(), "s3cret") {
				t.Errorf("error reveals a header value: %v", err)
			}
		})
	}
}

// TestConfigReportsEveryProblem: one error lists them all.
func TestConfigReportsEveryProblem(t *testing.T) {
	t.Parallel()
	_, err := ConfigFromEnv(lookup(map[string]string{
		"OTEL_SDK_DISABLED":           "maybe",
		"OTEL_EXPORTER_OTLP_ENDPOINT": "collector",
		"OTEL_TRACES_SAMPLER":         "sometimes",
		"OTEL_BSP_MAX_QUEUE_SIZE":     "x",
	}), "ensure-user")
	for _, name := range []string{"OTEL_SDK_DISABLED", "OTEL_EXPORTER_OTLP_ENDPOINT", "OTEL_TRACES_SAMPLER", "OTEL_BSP_MAX_QUEUE_SIZE"} {
		if err == nil || !strings.Contains(err.Error(), name) {
			t.Errorf("error does not name %s: %v", name, err)
		}
	}
}

func TestValidateOfConfigInCode(t *testing.T) {
	t.Parallel()
	if err := (Config{Endpoint: "http://127.0.0.1:4318/v1/traces"}).Validate(); err == nil || !strings.Contains(err.Error(), "OTEL_SERVICE_NAME") {
		t.Errorf("an enabled Config without a service name: %v", err)
	}
	if err := (Config{Endpoint: "http://127.0.0.1:4318/v1/traces", ServiceName: "x"}).Validate(); err != nil {
		t.Error(err)
	}
}

// TestHeadersNeverPrint: the values are credentials.
func TestHeadersNeverPrint(t *testing.T) {
	t.Parallel()
	c := Config{Headers: Headers{"Authorization": "Bearer s3cret"}}
	js, err := json.Marshal(c)
	if err != nil {
		t.Fatal(err)
	}
	for _, s := range []string{fmt.Sprint(c), fmt.Sprintf("%+v", c), fmt.Sprintf("%#v", c), string(js)} {
		if strings.Contains(s, "s3cret") {
			t.Errorf("a header value printed: %s", s)
		}
		if !strings.Contains(s, "Authorization") {
			t.Errorf("the header's name is missing: %s", s)
		}
	}
}

// TestVarsAreRead: every variable of Vars is one ConfigFromEnv reads, so
// the flags and documentation derived from Vars are complete.
func TestVarsAreRead(t *testing.T) {
	t.Parallel()
	read := map[string]bool{}
	_, _ = ConfigFromEnv(func(name string) (string, bool) {
		read[name] = true
		return "", false
	}, "x")
	for _, v := range Vars {
		if !read[v.Name] {
			t.Errorf("%s is listed but not read", v.Name)
		}
		delete(read, v.Name)
	}
	for name := range read {
		t.Errorf("%s is read but not listed in Vars", name)
	}
	// The defaults Vars documents are the ones in force.
	env := map[string]string{}
	for _, v := range Vars {
		if v.Default != "" {
			env[v.Name] = v.Default
		}
	}
	withDefaults, err := ConfigFromEnv(lookup(env), "x")
	if err != nil {
		t.Fatal(err)
	}
	if withDefaults.timeout() != DefaultTimeout || withDefaults.scheduleDelay() != DefaultScheduleDelay ||
		withDefaults.maxQueueSize() != DefaultMaxQueueSize || withDefaults.sampler() != DefaultSampler {
		t.Errorf("documented defaults differ: %+v", withDefaults)
	}
}
