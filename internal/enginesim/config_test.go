package enginesim

import (
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

// TestLoadDefaultsMatchZeroConfig: an empty environment and Config{} are the
// same Engine, so the binary and the dev mode cannot drift.
func TestLoadDefaultsMatchZeroConfig(t *testing.T) {
	t.Parallel()
	cfg, err := Load(lookup(nil))
	if err != nil {
		t.Fatal(err)
	}
	consumer := func() string { return "me" }
	if got, want := cfg.withDefaults(consumer), (Config{}).withDefaults(consumer); got != want {
		t.Errorf("Load with no variables = %+v\nConfig{} with defaults = %+v", got, want)
	}
}

func TestLoadReadsEveryVariable(t *testing.T) {
	t.Parallel()
	cfg, err := Load(lookup(map[string]string{
		"ENGINE_REQUEST_STREAM":  "req",
		"ENGINE_REPLY_STREAM":    "rep",
		"ENGINE_GROUP":           "g",
		"ENGINE_CONSUMER":        "c",
		"ENGINE_USERS_KEY":       "u",
		"ENGINE_READ_COUNT":      "7",
		"ENGINE_READ_BLOCK":      "250ms",
		"ENGINE_CLAIM_IDLE":      "1m",
		"ENGINE_REPLY_MAXLEN":    "99",
		"ENGINE_REPLY_DELAY":     "10ms",
		"ENGINE_REPLY_DELAY_MAX": "20ms",
		"ENGINE_MAX_IN_FLIGHT":   "5",
		"ENGINE_ERROR_RATIO":     "0.25",
		"ENGINE_DROP_RATIO":      "0.5",
		"ENGINE_LEGACY":          "true",
	}))
	if err != nil {
		t.Fatal(err)
	}
	want := Config{
		RequestStream: "req", ReplyStream: "rep", Group: "g", Consumer: "c", UsersKey: "u",
		ReadCount: 7, ReadBlock: 250 * time.Millisecond, ClaimIdle: time.Minute, ReplyMaxLen: 99,
		ReplyDelay: 10 * time.Millisecond, ReplyDelayMax: 20 * time.Millisecond, MaxInFlight: 5,
		ErrorRatio: 0.25, DropRatio: 0.5, Legacy: true,
	}
	if cfg != want {
		t.Errorf("Load = %+v\nwant   %+v", cfg, want)
	}
	if len(Vars) != 15 {
		t.Errorf("Vars has %d variables, this test reads 15", len(Vars))
	}
}

func TestLoadReportsEveryProblem(t *testing.T) {
	t.Parallel()
	_, err := Load(lookup(map[string]string{
		"ENGINE_READ_COUNT":  "x",
		"ENGINE_ERROR_RATIO": "2",
	}))
	if err == nil {
		t.Fatal("accepted")
	}
	// A parse error stops before validation; the ratio is a parse success.
	if !strings.Contains(err.Error(), "ENGINE_READ_COUNT") {
		t.Errorf("error does not name ENGINE_READ_COUNT: %v", err)
	}
	_, err = Load(lookup(map[string]string{"ENGINE_READ_COUNT": "0", "ENGINE_ERROR_RATIO": "2"}))
	for _, name := range []string{"ENGINE_READ_COUNT", "ENGINE_ERROR_RATIO"} {
		if err == nil || !strings.Contains(err.Error(), name) {
			t.Errorf("error does not name %s: %v", name, err)
		}
	}
}

func TestValidate(t *testing.T) {
	t.Parallel()
	valid := (Config{}).withDefaults(func() string { return "c" })
	for _, tc := range []struct {
		name   string
		change func(*Config)
		want   string // variable named; "" when valid
	}{
		{"defaults", func(*Config) {}, ""},
		{"fixed delay under the claim idle", func(c *Config) { c.ReplyDelay = time.Second }, ""},
		{"delay range", func(c *Config) { c.ReplyDelay, c.ReplyDelayMax = 0, time.Second }, ""},
		{"same streams", func(c *Config) { c.ReplyStream = c.RequestStream }, "ENGINE_REPLY_STREAM"},
		{"users key is a stream", func(c *Config) { c.UsersKey = c.ReplyStream }, "ENGINE_USERS_KEY"},
		{"no consumer", func(c *Config) { c.Consumer = "" }, "ENGINE_CONSUMER"},
		{"block under 1ms", func(c *Config) { c.ReadBlock = time.Microsecond }, "ENGINE_READ_BLOCK"},
		{"delay reaches the claim idle", func(c *Config) { c.ReplyDelayMax = c.ClaimIdle }, "ENGINE_CLAIM_IDLE"},
		{"delay max under delay", func(c *Config) { c.ReplyDelay, c.ReplyDelayMax = 2*time.Second, time.Second }, "ENGINE_REPLY_DELAY_MAX"},
		{"negative drop ratio", func(c *Config) { c.DropRatio = -1 }, "ENGINE_DROP_RATIO"},
		{"max in flight", func(c *Config) { c.MaxInFlight = -1 }, "ENGINE_MAX_IN_FLIGHT"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			c := valid
			tc.change(&c)
			err := c.Validate()
			switch {
			case tc.want == "" && err != nil:
				t.Errorf("refused: %v", err)
			case tc.want != "" && (err == nil || !strings.Contains(err.Error(), tc.want)):
				t.Errorf("error %v does not name %s", err, tc.want)
			}
		})
	}
}

func TestQueue(t *testing.T) {
	t.Parallel()
	now := time.Now()
	at := func(id string, d time.Duration) outgoing { return outgoing{id: id, due: now.Add(d)} }
	var q queue
	q.push([]outgoing{at("late", 3*time.Second), at("now-1", 0), at("soon", time.Second), at("now-2", 0)}, now)
	ids := func(os []outgoing) (s []string) {
		for _, o := range os {
			s = append(s, o.id)
		}
		return s
	}
	if got := ids(q.pop(now, false, 10)); strings.Join(got, ",") != "now-1,now-2" {
		t.Errorf("due now: %v, want now-1,now-2 in arrival order", got)
	}
	if q.len() != 2 || !q.next().Equal(now.Add(time.Second)) {
		t.Errorf("len %d next %v; want 2 and the soon one", q.len(), q.next())
	}
	if got := ids(q.pop(now.Add(time.Second), false, 10)); strings.Join(got, ",") != "soon" {
		t.Errorf("due in 1s: %v, want soon", got)
	}
	q.push([]outgoing{at("a", 5*time.Second), at("b", 4*time.Second)}, now)
	if got := ids(q.pop(now, true, 2)); strings.Join(got, ",") != "late,b" {
		t.Errorf("all, 2 at most: %v, want the earliest two, late,b", got)
	}
	if got := ids(q.pop(now, true, 2)); strings.Join(got, ",") != "a" || q.len() != 0 {
		t.Errorf("all: %v, want a and an empty queue", got)
	}
}

func TestReplayRefusesOutOfStep(t *testing.T) {
	t.Parallel()
	r := &replay{users: []string{"a"}, answers: []added{{added: true}}}
	if _, err := r.Add(t.Context(), "b"); err == nil {
		t.Error("replay answered for a user it did not expect")
	}
	if ok, err := r.Add(t.Context(), "a"); !ok || err != nil {
		t.Errorf("Add(a) = %v, %v; want true", ok, err)
	}
	if _, err := r.Add(t.Context(), "a"); err == nil {
		t.Error("replay answered past its answers")
	}
}
