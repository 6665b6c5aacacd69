package testenv

import (
	"context"
	"fmt"
	"net"
	"os"
	"os/exec"
	"slices"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/redis/rueidis"
)

// clusterNodeTimeout is the cluster-node-timeout of test clusters: a master
// that stops answering is failed over about a second or two later.
const clusterNodeTimeout = "1000"

// clusterReadyTimeout bounds the creation of a cluster, and a failover.
const clusterReadyTimeout = 30 * time.Second

// RequireRedisTools skips t when redis-server or one of tools (such as
// redis-cli) is missing, or fails it under REQUIRE_REAL_REDIS=1: clusters and
// sentinels have no embedded fallback.
func RequireRedisTools(t testing.TB, tools ...string) {
	t.Helper()
	for _, tool := range append([]string{"redis-server"}, tools...) {
		if _, err := exec.LookPath(tool); err != nil {
			if os.Getenv(RequireRealRedisEnv) == "1" {
				t.Fatalf("%s not found and %s=1: %v", tool, RequireRealRedisEnv, err)
			}
			t.Skipf("needs %s: %v", tool, err)
		}
	}
}

// Cluster is a Redis Cluster owned by one test: three masters with one
// replica each, every node a redis-server on free loopback ports (client and
// cluster bus) with its own directory, cluster-node-timeout 1 s and the
// append-only file on. Nodes are plain *Redis: Kill one to fail it over.
type Cluster struct {
	t     testing.TB
	Nodes []*Redis

	mu     sync.Mutex
	client rueidis.Client
}

// StartCluster starts six nodes, joins them with redis-cli --cluster create
// (the first three become masters), and waits until every node reports
// cluster_state:ok, knows all six, and every replica is in sync.
func StartCluster(t testing.TB) *Cluster {
	t.Helper()
	RequireRedisTools(t, "redis-cli")
	c := &Cluster{t: t}
	args := []string{"create"}
	for range 6 {
		n := StartRedis(t, WithRedisArgs(
			"--cluster-enabled", "yes", "--cluster-config-file", "nodes.conf",
			"--cluster-node-timeout", clusterNodeTimeout,
			// The bus port defaults to port+10000, which may be taken or
			// beyond 65535: give it a free port of its own (Redis 7.0).
			"--cluster-port", strconv.Itoa(freePort(t)),
			"--appendonly", "yes",
			"--repl-diskless-sync-delay", "0", // replicas sync at once, not after 5 s
		))
		c.Nodes = append(c.Nodes, n)
		args = append(args, n.Addr())
	}
	ctx, cancel := context.WithTimeout(context.Background(), clusterReadyTimeout)
	defer cancel()
	cmd := exec.CommandContext(ctx, "redis-cli", append([]string{"--cluster"}, append(args, "--cluster-replicas", "1", "--cluster-yes")...)...)
	if out, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("redis-cli --cluster create: %v\n%s", err, out)
	}
	if err := c.waitHealthy(ctx, nil); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		c.mu.Lock()
		defer c.mu.Unlock()
		if c.client != nil {
			c.client.Close()
		}
	})
	return c
}

// URL is the REDIS_URL of the cluster in the form rueidis.ParseURL reads:
// the first node, and every other one as ?addr=.
func (c *Cluster) URL() string {
	u := "redis://" + c.Nodes[0].Addr()
	for i, n := range c.Nodes[1:] {
		sep := "&"
		if i == 0 {
			sep = "?"
		}
		u += sep + "addr=" + n.Addr()
	}
	return u
}

// Client returns a cluster client for assertions, created on first use and
// closed at cleanup.
func (c *Cluster) Client() rueidis.Client {
	c.t.Helper()
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.client == nil {
		addrs := make([]string, len(c.Nodes))
		for i, n := range c.Nodes {
			addrs[i] = n.Addr()
		}
		client, err := rueidis.NewClient(rueidis.ClientOption{
			InitAddress: addrs, DisableCache: true, Dialer: net.Dialer{Timeout: time.Second},
		})
		if err != nil {
			c.t.Fatalf("cluster test client: %v", err)
		}
		c.client = client
	}
	return c.client
}

// clusterNode is one line of CLUSTER NODES.
type clusterNode struct {
	addr   string // host:port
	master bool
	failed bool     // flags fail or fail?
	slots  [][2]int // owned slot ranges, for masters
}

func parseClusterNodes(s string) []clusterNode {
	var nodes []clusterNode
	for _, line := range strings.Split(strings.TrimSpace(verbatim(s)), "\n") {
		f := strings.Fields(line)
		if len(f) < 8 {
			continue
		}
		addr, _, _ := strings.Cut(f[1], "@")
		flags := strings.Split(f[2], ",")
		n := clusterNode{
			addr:   addr,
			master: slices.Contains(flags, "master"),
			failed: slices.Contains(flags, "fail") || slices.Contains(flags, "fail?"),
		}
		for _, r := range f[8:] {
			if strings.HasPrefix(r, "[") { // a slot being migrated
				continue
			}
			lo, hi, found := strings.Cut(r, "-")
			a, _ := strconv.Atoi(lo)
			b := a
			if found {
				b, _ = strconv.Atoi(hi)
			}
			n.slots = append(n.slots, [2]int{a, b})
		}
		nodes = append(nodes, n)
	}
	return nodes
}

func (n clusterNode) owns(slot int) bool {
	for _, r := range n.slots {
		if slot >= r[0] && slot <= r[1] {
			return true
		}
	}
	return false
}

// alive lists the nodes not in skip.
func (c *Cluster) alive(skip []*Redis) []*Redis {
	var live []*Redis
	for _, n := range c.Nodes {
		if !slices.Contains(skip, n) {
			live = append(live, n)
		}
	}
	return live
}

// MasterOf returns the node that is master of key's slot now, as the live
// nodes other than skip see it.
func (c *Cluster) MasterOf(ctx context.Context, key string, skip ...*Redis) *Redis {
	c.t.Helper()
	live := c.alive(skip)
	slot, err := live[0].Do(ctx, "CLUSTER", "KEYSLOT", key).AsInt64()
	if err != nil {
		c.t.Fatalf("CLUSTER KEYSLOT %s: %v", key, err)
	}
	s, err := live[0].Do(ctx, "CLUSTER", "NODES").ToString()
	if err != nil {
		c.t.Fatalf("CLUSTER NODES: %v", err)
	}
	for _, n := range parseClusterNodes(s) {
		if n.master && !n.failed && n.owns(int(slot)) {
			for _, node := range live {
				if node.Addr() == n.addr {
					return node
				}
			}
		}
	}
	c.t.Fatalf("no live master owns slot %d of %s:\n%s", slot, key, s)
	return nil
}

// WaitFailover waits until the live nodes (all but killed) agree that the
// cluster is healthy again: cluster_state:ok on each, and every slot owned by
// a live master; that is, a replica of each killed master was promoted.
func (c *Cluster) WaitFailover(ctx context.Context, killed ...*Redis) error {
	ctx, cancel := context.WithTimeout(ctx, clusterReadyTimeout)
	defer cancel()
	return c.waitHealthy(ctx, killed)
}

// waitHealthy polls the live nodes until they are healthy; see StartCluster
// and WaitFailover. Polling is the only way to observe a cluster converge.
func (c *Cluster) waitHealthy(ctx context.Context, killed []*Redis) error {
	live := c.alive(killed)
	tick := time.NewTicker(50 * time.Millisecond)
	defer tick.Stop()
	var last string
	for {
		ok, why := c.healthy(ctx, live, killed)
		if ok {
			return nil
		}
		last = why
		select {
		case <-ctx.Done():
			return fmt.Errorf("cluster not healthy (last: %s): %w", last, ctx.Err())
		case <-tick.C:
		}
	}
}

func (c *Cluster) healthy(ctx context.Context, live, killed []*Redis) (bool, string) {
	liveAddrs := map[string]bool{}
	for _, n := range live {
		liveAddrs[n.Addr()] = true
	}
	for _, n := range live {
		info, err := n.Do(ctx, "CLUSTER", "INFO").ToString()
		if err != nil {
			return false, n.Addr() + ": " + err.Error()
		}
		if !strings.Contains(info, "cluster_state:ok") {
			return false, n.Addr() + ": cluster_state not ok"
		}
		if !strings.Contains(info, "cluster_known_nodes:"+strconv.Itoa(len(c.Nodes))) {
			return false, n.Addr() + ": does not know every node yet"
		}
		nodes, err := n.Do(ctx, "CLUSTER", "NODES").ToString()
		if err != nil {
			return false, n.Addr() + ": " + err.Error()
		}
		covered := 0
		for _, cn := range parseClusterNodes(nodes) {
			if !cn.master || cn.failed || !liveAddrs[cn.addr] {
				continue
			}
			for _, r := range cn.slots {
				covered += r[1] - r[0] + 1
			}
		}
		if covered != 16384 {
			return false, fmt.Sprintf("%s: live masters own %d slots", n.Addr(), covered)
		}
		if len(killed) == 0 { // at creation, wait for the replicas' first sync too
			repl, err := n.Do(ctx, "INFO", "replication").ToString()
			if err != nil {
				return false, n.Addr() + ": " + err.Error()
			}
			if strings.Contains(repl, "role:slave") && !strings.Contains(repl, "master_link_status:up") {
				return false, n.Addr() + ": replica not in sync"
			}
		}
	}
	return true, ""
}
