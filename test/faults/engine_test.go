package faults

import (
	"context"
	"io"
	"net/http"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/ensure-user/ensure-user/internal/protocol"
	"github.com/ensure-user/ensure-user/test/testenv"
)

// TestEngineDownBacklogIsProcessedLater: with no Engine reading, every
// request is answered 202 once its reply timeout runs out, and its command
// stays in the request stream. An engine-sim started afterwards processes
// every one of them. The three counts agree - the service's XADDs
// (ensure_user_engine_commands_sent_total), the stream's entries (XLEN) and
// the commands the Engine handled (its metric, its users set, its consumer
// group) - and the stream holds exactly the commands the service logged, each
// once.
func TestEngineDownBacklogIsProcessedLater(t *testing.T) {
	t.Parallel()
	const n = 40
	const replyTimeout = time.Second
	r := newRig(t, rigOptions{engine: noEngine, env: map[string]string{"ENGINE_REPLY_TIMEOUT": replyTimeout.String()}})
	var (
		got collect
		wg  sync.WaitGroup
	)
	for _, tok := range r.tokens("backlog", n) {
		wg.Go(func() { got.add(r.post(context.Background(), r.client, tok)) })
	}
	wg.Wait()
	for _, a := range got.answers() {
		want(t, "Engine down", a, 202, bodyInitiated)
		if a.Took > replyTimeout+margin {
			t.Errorf("waited %s, past the reply timeout %s plus %s", a.Took, replyTimeout, margin)
		}
	}
	if sent := r.metric(mSent); sent != n {
		t.Errorf("%s = %v, want %d", mSent, sent, n)
	}
	if l := r.xlen(requestStream); l != n {
		t.Errorf("XLEN %s = %d, want %d", requestStream, l, n)
	}
	inStream := assertDistinctRequestIDs(t, r.streamRequests())
	logged := map[string]bool{}
	lines := waitLogs(t, r.svc.Process, n, func(l map[string]any) bool {
		return l["msg"] == "request" && l["route"] == endpoint && l["outcome"] == "initiated"
	})
	for _, l := range lines {
		id, _ := l["engine_request_id"].(string)
		logged[id] = true
		if _, ok := inStream[id]; !ok {
			t.Errorf("the service logged command %s, which is not in the stream", id)
		}
	}
	if len(logged) != n {
		t.Errorf("the service logged %d distinct commands, want %d", len(logged), n)
	}

	sim := startEngineSim(t, r.redis.URL(), nil)
	gs := r.waitEngineCaughtUp(30 * time.Second)
	if gs.entriesRead >= 0 && gs.entriesRead != n {
		t.Errorf("the Engine's group read %d entries, want %d", gs.entriesRead, n)
	}
	waitScrape(t, sim.MetricsURL, `engine_sim_commands_total{result="ok"}`, 10*time.Second,
		func(v float64) bool { return v == n })
	if users, err := r.redis.MustDo(context.Background(), "SCARD", requestStream+":users").AsInt64(); err != nil || users != n {
		t.Errorf("the Engine knows %d users (%v), want %d", users, err, n)
	}
	// The replies reach the service too, after their requests gave up.
	r.waitMetric(mLate, 10*time.Second, func(v float64) bool { return v == n })

	want(t, "with the Engine back", r.ensure("backlog-after"), 200, bodyConfirmed)
	if sent, l := r.metric(mSent), r.xlen(requestStream); sent != n+1 || l != n+1 {
		t.Errorf("after one more request: %v XADDs, XLEN %d; want %d", sent, l, n+1)
	}
}

// TestOverloadRefusesBeyondMaxWaiting floods a service capped at 50 waiting
// requests with 500 concurrent ones while the Engine is silent: those beyond
// the cap are refused at once with 503 busy and send nothing, so the XADDs
// (metric and XLEN) equal the accepted requests.
func TestOverloadRefusesBeyondMaxWaiting(t *testing.T) {
	t.Parallel()
	const maxWaiting, n = 50, 500
	// Long enough that a refusal (which waits for nothing but CPU to verify
	// its token, slow under -race on a loaded 2-core machine) cannot be
	// mistaken for a wait on the Engine.
	const replyTimeout = 10 * time.Second
	r := newRig(t, rigOptions{engine: noEngine, env: map[string]string{
		"ENGINE_MAX_WAITING": strconv.Itoa(maxWaiting), "ENGINE_REPLY_TIMEOUT": replyTimeout.String(),
		"SHUTDOWN_TIMEOUT": (replyTimeout + 5*time.Second).String(),
		// The flood starves the service's goroutines for seconds under
		// -race: the header bound must not cut clients that sent in time.
		"HTTP_READ_HEADER_TIMEOUT": "30s",
		// and may hold an XADD past its 2 s default bound (a 502).
		"ENGINE_SEND_TIMEOUT": replyTimeout.String(),
	}})
	tokens := r.tokens("flood", n)
	client := &http.Client{Timeout: 30 * time.Second, Transport: &http.Transport{MaxIdleConnsPerHost: n}}
	var (
		got collect
		wg  sync.WaitGroup
	)
	// Open the 500 connections first, so that the flood measures the
	// service, not TCP handshakes.
	for range n {
		wg.Go(func() {
			if resp, err := client.Get(r.svc.URL + "/livez"); err == nil {
				_, _ = io.Copy(io.Discard, resp.Body)
				_ = resp.Body.Close()
			}
		})
	}
	wg.Wait()
	start := make(chan struct{})
	for _, tok := range tokens {
		wg.Go(func() {
			<-start
			got.add(r.post(context.Background(), client, tok))
		})
	}
	close(start)
	wg.Wait()

	var accepted, busy int
	var lastBusy, firstAccepted time.Time
	var slowestBusy time.Duration
	for _, a := range got.answers() {
		end := a.Start.Add(a.Took)
		switch {
		case a.Status == 202 && a.Body == bodyInitiated:
			accepted++
			if firstAccepted.IsZero() || end.Before(firstAccepted) {
				firstAccepted = end
			}
		case a.Status == 503 && a.Body == bodyBusy:
			busy++
			if end.After(lastBusy) {
				lastBusy = end
			}
			slowestBusy = max(slowestBusy, a.Took)
			if a.Header.Get("Retry-After") == "" {
				t.Error("busy answer without Retry-After")
			}
			if a.Took >= replyTimeout { // refused without waiting for any reply
				t.Errorf("a busy answer took %s, as long as a wait for the Engine", a.Took)
			}
		default:
			t.Errorf("unexpected answer %s", a)
		}
	}
	t.Logf("%d accepted, %d busy (the slowest busy answer took %s)", accepted, busy, slowestBusy.Round(time.Millisecond))
	if accepted < maxWaiting || busy == 0 {
		t.Errorf("%d accepted and %d busy; want at least %d accepted and some busy", accepted, busy, maxWaiting)
	}
	if lastBusy.Before(firstAccepted) && accepted != maxWaiting {
		// Every refusal came while the first accepted requests still waited,
		// so the cap alone decided.
		t.Errorf("%d accepted, want exactly ENGINE_MAX_WAITING = %d", accepted, maxWaiting)
	}
	if sent := r.metric(mSent); sent != float64(accepted) {
		t.Errorf("%s = %v, want the %d accepted", mSent, sent, accepted)
	}
	if l := r.xlen(requestStream); l != int64(accepted) {
		t.Errorf("XLEN = %d, want the %d accepted", l, accepted)
	}
	if b := r.metric(mBusy); b != float64(busy) {
		t.Errorf("%s = %v, want %d", mBusy, b, busy)
	}
	r.assertAlive()
}

// TestMisbehavingEngine: an Engine that answers late, twice, for requests
// nobody made, with junk, with fields missing, with 1 MiB, and that deletes
// its reply stream and recreates it with lower ids. Each bad entry is skipped
// and counted by result, none is fatal, none reaches the wrong request (a
// skipped entry that names a waiting request and says "ok" or "error" does
// not decide its answer), and valid requests keep working.
func TestMisbehavingEngine(t *testing.T) {
	t.Parallel()
	// Every reply below but the late one must arrive before this: the junk
	// (1 MiB of it) and the replies took 3 s on a loaded CI machine.
	const replyTimeout = 10 * time.Second
	r := newRig(t, rigOptions{engine: scriptEngine, env: map[string]string{
		"ENGINE_REPLY_TIMEOUT": replyTimeout.String(), "SHUTDOWN_TIMEOUT": (replyTimeout + 5*time.Second).String()}})
	want(t, "before", r.ensure("ok-before"), 200, bodyConfirmed)
	base := map[string]float64{}
	for _, m := range []string{mDelivered, mLate, mUnknown, mMalformed} {
		base[m] = r.metric(m)
	}
	start := func(userID string) <-chan testenv.Answer {
		tok := r.token(userID)
		ch := make(chan testenv.Answer, 1)
		go func() { ch <- r.post(context.Background(), r.client, tok) }()
		return ch
	}
	e := r.engine

	dup, crossB, crossC, huge, late := start("dup"), start("cross-b"), start("cross-c"), start("huge"), start("late")
	reqDup, reqB, reqC, reqHuge, reqLate := r.await(t, "dup"), r.await(t, "cross-b"), r.await(t, "cross-c"), r.await(t, "huge"), r.await(t, "late")

	junk := []struct{ field, value string }{
		{protocol.Field, "not json{"},
		{protocol.Field, `{"function":"createUser","status":"ok"}`},                                                                // no requestId
		{"other", `{"requestId":"` + reqDup.RequestID + `","status":"error"}`},                                                     // no message field
		{protocol.Field, `["` + reqDup.RequestID + `"]`},                                                                           // an array
		{protocol.Field, `{"requestId":12345,"status":"ok"}`},                                                                      // requestId a number
		{protocol.Field, `{"requestId":"` + reqDup.RequestID + `","status":7}`},                                                    // status a number
		{protocol.Field, `{"requestId":"` + reqHuge.RequestID + `","status":"ok","message":"` + strings.Repeat("x", 1<<20) + `"}`}, // 1 MiB
	}
	for _, j := range junk {
		e.Write(t, replyStream, j.field, j.value)
	}
	e.Write(t, replyStream, protocol.Field, // nobody's request
		`{"function":"createUser","requestId":"00000000-0000-4000-8000-000000000000","message":"x","status":"error"}`)
	e.Reply(t, reqDup, "ok")
	e.Reply(t, reqDup, "error") // a duplicate, saying otherwise: too late to matter
	e.Reply(t, reqC, "error")   // B and C answered in reverse order
	e.Reply(t, reqB, "ok")
	e.Reply(t, reqHuge, "error") // the real answer, after the 1 MiB "ok"

	want(t, "duplicate replies", <-dup, 200, bodyConfirmed)
	want(t, "cross: B", <-crossB, 200, bodyConfirmed)
	want(t, "cross: C", <-crossC, 502, bodyEngineFailed)
	want(t, "after a 1 MiB reply", <-huge, 502, bodyEngineFailed)
	a := <-late
	want(t, "no reply in time", a, 202, bodyInitiated)
	e.Reply(t, reqLate, "ok")

	for _, c := range []struct {
		series string
		delta  float64
	}{{mDelivered, 4}, {mLate, 2}, {mUnknown, 1}, {mMalformed, float64(len(junk))}} {
		r.waitMetric(c.series, 10*time.Second, func(v float64) bool { return v == base[c.series]+c.delta })
	}
	want(t, "valid requests keep working", r.ensure("ok-middle"), 200, bodyConfirmed)

	t.Run("reply stream deleted and recreated with lower ids", func(t *testing.T) {
		e.Do(t, "DEL", replyStream)
		rewound := start("rewound")
		req := r.await(t, "rewound")
		reply := protocol.Reply{Function: "createUser", RequestID: req.RequestID, Message: req.UserID, Status: "ok"}
		e.WriteID(t, replyStream, "1-1", protocol.Field, string(protocol.EncodeReply(reply)))
		want(t, "reply on the recreated stream", <-rewound, 200, bodyConfirmed)
	})
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	if _, err := r.svc.WaitLog(ctx, "reply stream deleted or rewound: reading it from the start"); err != nil {
		t.Error(err)
	}
	want(t, "after the stream was recreated", r.ensure("ok-after"), 200, bodyConfirmed)
	r.waitReady(5 * time.Second)
	r.assertAlive()
}
