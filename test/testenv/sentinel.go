package testenv

import (
	"bytes"
	"context"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/redis/rueidis"

	"github.com/ensure-user/ensure-user/internal/proc"
)

// SentinelMaster is the master set name test sentinels monitor.
const SentinelMaster = "m"

// Sentinel is a monitored master with one replica and three sentinels (quorum
// 2, down-after 1 s, failover-timeout 3 s), every process on free loopback
// ports, owned by one test.
type Sentinel struct {
	t         testing.TB
	Master    *Redis
	Replica   *Redis
	Sentinels []*SentinelNode
}

// SentinelNode is one redis-server running in sentinel mode.
type SentinelNode struct {
	port   int
	cmd    *exec.Cmd
	exited chan struct{}
	mu     sync.Mutex
	out    bytes.Buffer
	client rueidis.Client
}

// Addr is the sentinel's host:port.
func (s *SentinelNode) Addr() string { return net.JoinHostPort("127.0.0.1", strconv.Itoa(s.port)) }

// StartSentinel starts the master, its replica and three sentinels, and waits
// until the replica is in sync and every sentinel knows the replica and the
// two other sentinels, so that a failover can be authorised at once.
func StartSentinel(t testing.TB) *Sentinel {
	t.Helper()
	RequireRedisTools(t)
	s := &Sentinel{t: t}
	s.Master = StartRedis(t, WithRedisArgs("--repl-diskless-sync-delay", "0"))
	_, mport, _ := net.SplitHostPort(s.Master.Addr())
	s.Replica = StartRedis(t, WithRedisArgs("--replicaof", "127.0.0.1", mport, "--repl-diskless-sync-delay", "0"))
	for range 3 {
		s.Sentinels = append(s.Sentinels, startSentinelNode(t, mport))
	}
	ctx, cancel := context.WithTimeout(context.Background(), clusterReadyTimeout)
	defer cancel()
	tick := time.NewTicker(50 * time.Millisecond) // polling: sentinels discover each other by themselves
	defer tick.Stop()
	for {
		why := s.notReady(ctx)
		if why == "" {
			return s
		}
		select {
		case <-ctx.Done():
			t.Fatalf("sentinels not ready: %s", why)
		case <-tick.C:
		}
	}
}

func (s *Sentinel) notReady(ctx context.Context) string {
	repl, err := s.Replica.Do(ctx, "INFO", "replication").ToString()
	if err != nil || !strings.Contains(repl, "master_link_status:up") {
		return "replica not in sync"
	}
	for _, n := range s.Sentinels {
		replicas, err := n.Do(ctx, "SENTINEL", "REPLICAS", SentinelMaster).ToArray()
		if err != nil || len(replicas) != 1 {
			return n.Addr() + " does not know the replica yet"
		}
		others, err := n.Do(ctx, "SENTINEL", "SENTINELS", SentinelMaster).ToArray()
		if err != nil || len(others) != len(s.Sentinels)-1 {
			return n.Addr() + " does not know the other sentinels yet"
		}
	}
	return ""
}

func startSentinelNode(t testing.TB, masterPort string) *SentinelNode {
	t.Helper()
	dir := t.TempDir()
	for attempt := 1; ; attempt++ {
		n := &SentinelNode{port: freePort(t)}
		conf := filepath.Join(dir, "sentinel.conf") // sentinels rewrite their file: it must be theirs
		body := fmt.Sprintf("port %d\nbind 127.0.0.1\ndaemonize no\ndir %s\n"+
			"sentinel monitor %s 127.0.0.1 %s 2\n"+
			"sentinel down-after-milliseconds %[3]s 1000\n"+
			"sentinel failover-timeout %[3]s 3000\n"+
			"sentinel parallel-syncs %[3]s 1\n", n.port, dir, SentinelMaster, masterPort)
		if err := os.WriteFile(conf, []byte(body), 0o600); err != nil {
			t.Fatal(err)
		}
		err := n.start(conf)
		if err == nil {
			t.Cleanup(n.Kill)
			return n
		}
		if attempt == 3 {
			t.Fatalf("start sentinel: %v\n%s", err, n.output())
		}
	}
}

func (n *SentinelNode) start(conf string) error {
	cmd := exec.Command("redis-server", conf, "--sentinel")
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	cmd.Stdout = lockedWriter{&n.mu, &n.out}
	cmd.Stderr = cmd.Stdout
	if err := cmd.Start(); err != nil {
		return err
	}
	n.cmd, n.exited = cmd, make(chan struct{})
	go func() {
		_ = cmd.Wait()
		close(n.exited)
	}()
	if err := proc.WaitRedis(context.Background(), n.Addr(), redisStartTimeout, n.exited); err != nil {
		n.Kill()
		return fmt.Errorf("sentinel: %w", err)
	}
	return nil
}

// Kill kills the sentinel and waits for it to exit.
func (n *SentinelNode) Kill() {
	n.mu.Lock()
	client := n.client
	n.client = nil
	n.mu.Unlock()
	if client != nil {
		client.Close()
	}
	if n.cmd == nil {
		return
	}
	_ = syscall.Kill(-n.cmd.Process.Pid, syscall.SIGKILL)
	<-n.exited
}

func (n *SentinelNode) output() string {
	n.mu.Lock()
	defer n.mu.Unlock()
	return n.out.String()
}

// Do runs one raw command on the sentinel.
func (n *SentinelNode) Do(ctx context.Context, args ...string) rueidis.RedisResult {
	n.mu.Lock()
	if n.client == nil {
		c, err := rueidis.NewClient(rueidis.ClientOption{
			InitAddress: []string{n.Addr()}, ForceSingleClient: true, DisableCache: true,
			DisableRetry: true, Dialer: net.Dialer{Timeout: time.Second},
		})
		if c == nil { // ForceSingleClient returns a client even when the dial fails
			n.mu.Unlock()
			return rueidis.NewErrorResult(err)
		}
		n.client = c
	}
	c := n.client
	n.mu.Unlock()
	return c.Do(ctx, c.B().Arbitrary(args[0]).Args(args[1:]...).Build())
}

// URL is the REDIS_URL that reaches the master through the sentinels, in the
// form rueidis.ParseURL reads.
func (s *Sentinel) URL() string {
	u := "redis://" + s.Sentinels[0].Addr() + "?master_set=" + SentinelMaster
	for _, n := range s.Sentinels[1:] {
		u += "&addr=" + n.Addr()
	}
	return u
}

// MasterAddr is the master's address as the first sentinel that answers
// reports it.
func (s *Sentinel) MasterAddr(ctx context.Context) (string, error) {
	var last error
	for _, n := range s.Sentinels {
		hp, err := n.Do(ctx, "SENTINEL", "GET-MASTER-ADDR-BY-NAME", SentinelMaster).AsStrSlice()
		if err == nil && len(hp) == 2 {
			return net.JoinHostPort(hp[0], hp[1]), nil
		}
		last = err
	}
	return "", fmt.Errorf("no sentinel knows the master: %v", last)
}

// WaitFailover waits until the sentinels name a master other than old and
// that server says it is a master.
func (s *Sentinel) WaitFailover(ctx context.Context, old string) (string, error) {
	ctx, cancel := context.WithTimeout(ctx, clusterReadyTimeout)
	defer cancel()
	tick := time.NewTicker(50 * time.Millisecond)
	defer tick.Stop()
	for {
		if addr, err := s.MasterAddr(ctx); err == nil && addr != old {
			for _, r := range []*Redis{s.Master, s.Replica} {
				if r.Addr() != addr {
					continue
				}
				if role, err := r.Do(ctx, "ROLE").ToArray(); err == nil && len(role) > 0 {
					if name, _ := role[0].ToString(); name == "master" {
						return addr, nil
					}
				}
			}
		}
		select {
		case <-ctx.Done():
			return "", fmt.Errorf("no failover away from %s: %w", old, ctx.Err())
		case <-tick.C:
		}
	}
}
