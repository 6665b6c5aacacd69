package e2e

import (
	"bytes"
	"context"
	"encoding/json"
	"testing"
	"time"

	"github.com/santhosh-tekuri/jsonschema/v6"
	"go.uber.org/zap/zaptest"
	"go.yaml.in/yaml/v4"

	"github.com/ensure-user/ensure-user/adapters/redisbus"
	"github.com/ensure-user/ensure-user/api"
	"github.com/ensure-user/ensure-user/domain"
	"github.com/ensure-user/ensure-user/internal/enginesim"
	"github.com/ensure-user/ensure-user/internal/protocol"
	"github.com/ensure-user/ensure-user/internal/setting"
	"github.com/ensure-user/ensure-user/test/testenv"
)

// asyncAPISchema compiles one payload schema of api/asyncapi.yaml.
func asyncAPISchema(t *testing.T, name string) *jsonschema.Schema {
	t.Helper()
	var doc any
	if err := yaml.Unmarshal(api.AsyncAPI, &doc); err != nil {
		t.Fatalf("asyncapi.yaml: %v", err)
	}
	js, err := json.Marshal(doc) // YAML values to JSON values, as the validator wants them
	if err != nil {
		t.Fatal(err)
	}
	v, err := jsonschema.UnmarshalJSON(bytes.NewReader(js))
	if err != nil {
		t.Fatal(err)
	}
	c := jsonschema.NewCompiler()
	c.AssertFormat()
	if err := c.AddResource("asyncapi.json", v); err != nil {
		t.Fatal(err)
	}
	s, err := c.Compile("asyncapi.json#/components/schemas/" + name)
	if err != nil {
		t.Fatalf("schema %s: %v", name, err)
	}
	return s
}

// TestWireMessagesMatchAsyncAPI checks that the commands the Redis bus
// actually writes, and the replies the reference Engine actually writes (in
// normal and legacy mode), validate against api/asyncapi.yaml.
func TestWireMessagesMatchAsyncAPI(t *testing.T) {
	t.Parallel()
	commandSchema := asyncAPISchema(t, "CreateUserCommand")
	replySchema := asyncAPISchema(t, "CreateUserReply")
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	r := testenv.StartRedis(t)
	log := zaptest.NewLogger(t)

	for _, legacy := range []bool{false, true} {
		prefix := map[bool]string{false: "current", true: "legacy"}[legacy]
		cfg := redisbus.Config{
			RequestStream: prefix + ":requests", ReplyStream: prefix + ":replies",
			ReplyTimeout: 5 * time.Second, RequestMaxLen: 1000, MaxWaiting: 100, DurableSend: redisbus.DurableOff,
		}
		client, closeClient, err := redisbus.Dial(redisbus.ConnConfig{URL: setting.Secret(r.URL())}, log)
		if err != nil {
			t.Fatal(err)
		}
		defer closeClient()
		bus, stop, err := redisbus.New(cfg, log, client, nil)
		if err != nil {
			t.Fatal(err)
		}
		defer stop()
		sim, err := enginesim.New(enginesim.Config{RequestStream: cfg.RequestStream, ReplyStream: cfg.ReplyStream, Legacy: legacy}, log, client, nil)
		if err != nil {
			t.Fatal(err)
		}
		simCtx, stopSim := context.WithCancel(ctx)
		simDone := make(chan error, 1)
		go func() { simDone <- sim.Run(simCtx) }()

		cmds := []domain.Command{
			{User: domain.User{ID: "u-1", Email: "u1@example.com"}},
			{User: domain.User{ID: `ü "q" \ 🙂`, Email: "o'neil+x@example.co.uk"},
				Trace: domain.Trace{Parent: "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01", State: "a=1"}},
			{User: domain.User{ID: "u-1", Email: "u1@example.com"}}, // an existing user
		}
		for _, c := range cmds {
			c.RequestID, c.SentAt = domain.NewRequestID(), time.Now().UTC()
			replies, err := bus.Send(ctx, c)
			if err != nil {
				t.Fatal(err)
			}
			select {
			case <-replies:
			case <-ctx.Done():
				t.Fatal("no reply")
			}
		}
		stopSim()
		if err := <-simDone; err != nil {
			t.Fatal(err)
		}

		for stream, schema := range map[string]*jsonschema.Schema{cfg.RequestStream: commandSchema, cfg.ReplyStream: replySchema} {
			entries, err := client.Do(ctx, client.B().Xrange().Key(stream).Start("-").End("+").Build()).AsXRange()
			if err != nil {
				t.Fatal(err)
			}
			if len(entries) != len(cmds) {
				t.Fatalf("%s holds %d entries, want %d", stream, len(entries), len(cmds))
			}
			for _, e := range entries {
				raw := e.FieldValues[protocol.Field]
				v, err := jsonschema.UnmarshalJSON(bytes.NewReader([]byte(raw)))
				if err != nil {
					t.Fatalf("%s entry %s is not JSON: %v", stream, raw, err)
				}
				if err := schema.Validate(v); err != nil {
					t.Errorf("%s entry %s does not match api/asyncapi.yaml: %v", stream, raw, err)
				}
				if legacy && stream == cfg.ReplyStream && bytes.Contains([]byte(raw), []byte(`"status"`)) {
					t.Errorf("legacy reply %s carries a status", raw)
				}
			}
		}
	}
}
