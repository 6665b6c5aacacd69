package redisbus

import (
	"context"
	"errors"
	"fmt"
	"strings"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/redis/rueidis"
	"go.uber.org/zap"
)

// ENGINE_DURABLE_SEND makes "sent" mean "on the master's disk" (aof: WAITAOF
// 1 0) or "on at least one replica" (replica: WAIT 1), instead of "in the
// master's memory". Without it, a command the master acknowledged can vanish
// when the master dies before its replicas or its fsync caught up, and the
// replica promoted in its place never heard of it: the request then waits
// for a reply that cannot come.
//
// WAIT and WAITAOF wait for the writes of the connection they run on, so the
// XADD and the WAIT must share one connection, which rueidis' automatic
// pipelining does not promise for two separate calls (it spreads commands over
// several pipelines, and hands blocking commands to a pool). So both go in
// one batch:
//   - standalone and sentinel clients: DoMulti(XADD, WAIT). A batch holding
//     a blocking command (rueidis tags WAIT and WAITAOF as blocking) runs
//     whole on one connection of the blocking pool (mux.go, DoMulti ->
//     blockingMulti), which stays ours until both answers are in.
//   - cluster client: Dedicated, then DoMulti on it. The cluster client's own
//     DoMulti follows a MOVED for the XADD alone, sending it to another node
//     while the WAIT ran on the first one, which would prove nothing; a
//     dedicated cluster client keeps the batch on one connection of the
//     slot's node and follows no redirection (cluster.go,
//     dedicatedClusterClient.DoMulti): a MOVED comes back as a Redis error, the
//     XADD was not executed, and rueidis refreshes its slot map for the next
//     call.
//
// Each durable send holds one pooled connection for the WAIT's duration
// (about one replication round trip when healthy, at most the wait): up to
// rueidis' BlockingPoolSize (1024) durable sends run at once per node; more
// wait for a connection, within the XADD's deadline.
//
// A WAIT that times out (or fails) after the XADD succeeded leaves the
// command in the stream, where the Engine may still read it, but not proven
// durable. Send then answers domain.ErrSendUnknown ("sent, outcome
// unknown": 502, whose body says the request was sent), counts it in
// ensure_user_engine_durable_sends_total{result="timeout"|"error"}, and stops
// waiting for the reply, which counts as late if it comes. The client may
// retry: createUser is idempotent.

// Results of ensure_user_engine_durable_sends_total.
const (
	durableConfirmed = "confirmed" // acknowledged by the replica / the fsync
	durableTimeout   = "timeout"   // the wait ran out: in the stream, not proven durable
	durableError     = "error"     // the WAIT itself failed after the XADD succeeded
)

func newDurableCounters(reg prometheus.Registerer) (map[string]prometheus.Counter, error) {
	vec := prometheus.NewCounterVec(prometheus.CounterOpts{
		Namespace: "ensure_user", Name: "engine_durable_sends_total",
		Help: "Commands published with ENGINE_DURABLE_SEND, by whether WAIT/WAITAOF proved them durable: confirmed, timeout or error (the last two answer 502).",
	}, []string{"result"})
	if reg != nil {
		if err := reg.Register(vec); err != nil {
			return nil, fmt.Errorf("register metrics: %w", err)
		}
	}
	m := map[string]prometheus.Counter{}
	for _, r := range []string{durableConfirmed, durableTimeout, durableError} {
		m[r] = vec.WithLabelValues(r)
	}
	return m, nil
}

func (b *Bus) durableMode() bool {
	return b.cfg.DurableSend == DurableAOF || b.cfg.DurableSend == DurableReplica
}

func (b *Bus) durableName() string {
	if b.durableMode() {
		return b.cfg.DurableSend
	}
	return DurableOff
}

// durableXadd runs xadd and then WAIT 1 / WAITAOF 1 0 on the same
// connection, bounded by the XADD timeout plus the wait. sendErr is the
// XADD's error, to be classified as for a plain XADD; durErr, when the XADD
// succeeded, says why the command is not proven durable.
func (b *Bus) durableXadd(ctx context.Context, xadd rueidis.Completed) (sendErr, durErr error) {
	ctx, cancel := context.WithTimeout(ctx, b.set.xaddTimeout+b.set.durableWait)
	defer cancel()
	ms := max(b.set.durableWait.Milliseconds(), 1) // 0 would wait forever
	name := "WAIT"
	wait := b.client.B().Wait().Numreplicas(1).Timeout(ms).Build()
	if b.cfg.DurableSend == DurableAOF {
		name = "WAITAOF"
		wait = b.client.B().Waitaof().Numlocal(1).Numreplicas(0).Timeout(ms).Build()
	}
	var res []rueidis.RedisResult
	if b.client.Mode() == rueidis.ClientModeCluster {
		_ = b.client.Dedicated(func(d rueidis.DedicatedClient) error {
			res = d.DoMulti(ctx, xadd, wait)
			return nil
		})
	} else {
		res = b.client.DoMulti(ctx, xadd, wait)
	}
	if err := res[0].Error(); err != nil {
		return err, nil
	}
	acked, err := durableAcks(res[1], b.cfg.DurableSend == DurableAOF)
	switch {
	case err != nil:
		b.errs[opWait].Inc()
		b.durable[durableError].Inc()
		return nil, fmt.Errorf("%s: %w", strings.ToLower(name), err)
	case acked < 1:
		b.durable[durableTimeout].Inc()
		return nil, fmt.Errorf("%s: not acknowledged within %s", strings.ToLower(name), b.set.durableWait)
	}
	b.durable[durableConfirmed].Inc()
	return nil, nil
}

// durableAcks reads WAIT's answer (the replicas that acknowledged) or
// WAITAOF's (the local fsync, 0 or 1, then the replicas); for WAITAOF 1 0 the
// local count is the one that matters.
func durableAcks(res rueidis.RedisResult, aof bool) (int64, error) {
	if !aof {
		return res.AsInt64()
	}
	arr, err := res.ToArray()
	if err != nil {
		return 0, err
	}
	if len(arr) < 1 {
		return 0, errors.New("empty WAITAOF answer")
	}
	return arr[0].AsInt64()
}

// checkDurable checks, before the bus starts, that the server can do what
// ENGINE_DURABLE_SEND asks. For aof it must have WAITAOF (Redis 7.2 and
// later) and, unless it is a cluster (where INFO would reach any node),
// appendonly on; otherwise it returns a permanentError naming the server's
// version. For replica it only warns when the master has no replica
// connected, as one may connect later. Connection errors are returned as
// they are, for the start-up retry.
func (b *Bus) checkDurable(ctx context.Context) error {
	if !b.durableMode() {
		return nil
	}
	ctx, cancel := context.WithTimeout(ctx, b.set.xaddTimeout)
	defer cancel()
	cluster := b.client.Mode() == rueidis.ClientModeCluster
	if b.cfg.DurableSend == DurableReplica {
		if cluster {
			return nil
		}
		info, err := b.info(ctx, "replication")
		if err != nil {
			if _, refused := rueidis.IsRedisErr(err); refused {
				return nil // INFO not allowed: nothing to warn about
			}
			return err
		}
		if infoField(info, "connected_slaves") == "0" {
			b.log.Warn("ENGINE_DURABLE_SEND=replica but the master has no replica connected: "+
				"every send answers 502 (not proven durable) until one connects", zap.String("role", infoField(info, "role")))
		}
		return nil
	}
	res, err := b.client.Do(ctx, b.client.B().CommandInfo().CommandName("WAITAOF").Build()).ToArray()
	if err != nil {
		b.errs[opCommand].Inc()
		if _, refused := rueidis.IsRedisErr(err); refused {
			return permanentError{fmt.Errorf("ENGINE_DURABLE_SEND=aof: cannot check that the server has WAITAOF: COMMAND INFO refused: %v", err)}
		}
		return fmt.Errorf("command info: %w", err)
	}
	if len(res) == 0 || res[0].IsNil() {
		return permanentError{fmt.Errorf("ENGINE_DURABLE_SEND=aof needs WAITAOF, which this server (Redis %s) lacks: "+
			"it came with Redis 7.2; upgrade the server, or use ENGINE_DURABLE_SEND=replica or off", b.serverVersion(ctx))}
	}
	if cluster {
		return nil
	}
	info, err := b.info(ctx, "persistence")
	if err != nil {
		if _, refused := rueidis.IsRedisErr(err); refused {
			return nil // cannot tell; a WAITAOF on a server without AOF fails each send, counted as error
		}
		return err
	}
	if infoField(info, "aof_enabled") != "1" {
		return permanentError{errors.New("ENGINE_DURABLE_SEND=aof needs the append-only file on the master " +
			"(appendonly yes); INFO persistence says aof_enabled:" + infoField(info, "aof_enabled"))}
	}
	return nil
}

// info returns the text of INFO section.
func (b *Bus) info(ctx context.Context, section string) (string, error) {
	s, err := b.client.Do(ctx, b.client.B().Info().Section(section).Build()).ToString()
	if err != nil {
		b.errs[opCommand].Inc()
		return "", fmt.Errorf("info %s: %w", section, err)
	}
	return s, nil
}

// serverVersion is the server's redis_version, or "of unknown version".
func (b *Bus) serverVersion(ctx context.Context) string {
	info, err := b.info(ctx, "server")
	if v := infoField(info, "redis_version"); err == nil && v != "" {
		return v
	}
	return "of unknown version"
}

// infoField returns the value of key in an INFO answer ("key:value" lines;
// RESP3 may prefix the text with "txt:"), or "".
func infoField(info, key string) string {
	for _, line := range strings.Split(strings.TrimPrefix(info, "txt:"), "\n") {
		if v, ok := strings.CutPrefix(strings.TrimSpace(line), key+":"); ok {
			return v
		}
	}
	return ""
}
