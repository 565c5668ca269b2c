"""A real Redis Cluster on loopback for the integration tests.

    from cluster_support import redis_cluster, key_slot

    def test_x(redis_cluster):
        port = redis_cluster.master_of_key("sc:{acme}:balance")
        redis_cluster.kill_master(port)            # a replica takes over its slots
        redis_cluster.migrate_slot(key_slot("{acme}"), other_port)

RedisCluster starts masters x (1 + replicas) redis-servers (support.RedisServer,
each in its own directory, its cluster bus on a port of its own), joins them with
`redis-cli --cluster create` and waits until every node agrees. Every change
(failover, resharding, restart) waits for the event it causes, never a fixed
time, and gives up after a bounded time with the cluster's state in the error.

Waits here are bounded in seconds as given (not stretched by SPEND_CAP_WAIT_SCALE,
which would turn a 60 s bound into 10 minutes); a wait that gives up raises
ClusterTimeout with every node's view.
"""

import os
import pathlib
import signal
import subprocess
import sys
import time

import pytest
import redis as redis_lib

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

import support  # noqa: E402
from support import RedisServer, free_port, port_open  # noqa: E402

SLOTS = 16384
HOST = "127.0.0.1"
REDIS_CLI = os.environ.get("TEST_REDIS_CLI") or os.path.join(os.path.dirname(support.REDIS_BIN), "redis-cli")


# ----------------------------------------------------------------- key slots

def _crc16_table():
    table = []
    for i in range(256):
        crc = i << 8
        for _ in range(8):
            crc = ((crc << 1) ^ 0x1021) if crc & 0x8000 else (crc << 1)
        table.append(crc & 0xFFFF)
    return table


_CRC16_TABLE = _crc16_table()


def crc16(data):
    """CRC16-CCITT (XMODEM): poly 0x1021, init 0, as Redis Cluster's crc16.c."""
    crc = 0
    for b in data:
        crc = ((crc << 8) & 0xFFFF) ^ _CRC16_TABLE[((crc >> 8) ^ b) & 0xFF]
    return crc


def key_slot(key):
    """The hash slot of `key` (str or bytes): CRC16 mod 16384 of the key, or of its
    hash tag: what is between the first "{" and the first "}" after it, when that
    is not empty."""
    if isinstance(key, str):
        key = key.encode()
    start = key.find(b"{")
    if start >= 0:
        end = key.find(b"}", start + 1)
        if end > start + 1:
            key = key[start + 1:end]
    return crc16(key) % SLOTS


# ------------------------------------------------------------------- views

class ClusterTimeout(AssertionError):
    pass


class NodeView:
    """One line of CLUSTER NODES."""

    def __init__(self, line):
        parts = line.split()
        self.id = parts[0]
        addr = parts[1].split(",")[0]  # ip:port@cport[,hostname]
        hostport = addr.split("@")[0]
        self.host, port = hostport.rsplit(":", 1)
        self.port = int(port) if port else 0
        self.flags = set(parts[2].split(","))
        self.master_id = None if parts[3] == "-" else parts[3]
        self.config_epoch = int(parts[6])
        self.link_state = parts[7]
        self.slots = []          # [(start, end)] inclusive
        self.migrating = {}      # slot -> node id (on the source node itself)
        self.importing = {}      # slot -> node id (on the destination node itself)
        for s in parts[8:]:
            if s.startswith("["):
                body = s[1:-1]
                if "->-" in body:
                    slot, nid = body.split("->-")
                    self.migrating[int(slot)] = nid
                elif "-<-" in body:
                    slot, nid = body.split("-<-")
                    self.importing[int(slot)] = nid
            elif "-" in s:
                a, b = s.split("-")
                self.slots.append((int(a), int(b)))
            else:
                self.slots.append((int(s), int(s)))

    @property
    def is_master(self):
        return "master" in self.flags

    @property
    def failed(self):
        return bool(self.flags & {"fail", "fail?", "noaddr", "handshake"})

    def __repr__(self):
        return "<%s %d %s %s%s>" % (self.id[:8], self.port, ",".join(sorted(self.flags)),
                                    "of " + self.master_id[:8] if self.master_id else "", self.slots)


def parse_cluster_nodes(text):
    return [NodeView(line) for line in text.splitlines() if line.strip()]


def _owner_ranges(views):
    """[(start, end, port)] of the slots the masters of one node's view serve, merged."""
    ranges = sorted((a, b, v.port) for v in views if v.is_master for a, b in v.slots)
    merged = []
    for a, b, port in ranges:
        if merged and merged[-1][2] == port and merged[-1][1] + 1 == a:
            merged[-1] = (merged[-1][0], b, port)
        else:
            merged.append((a, b, port))
    return merged


# ----------------------------------------------------------------- cluster

class RedisCluster:
    def __init__(self, workdir, masters=3, replicas=1, node_timeout_ms=2000, password=None):
        self.workdir = pathlib.Path(workdir)
        self.workdir.mkdir(parents=True, exist_ok=True)
        self.n_masters = masters
        self.n_replicas = replicas
        self.node_timeout_ms = node_timeout_ms
        self.password = password
        self.nodes = []
        self._clients = {}
        self._ids = {}           # port -> node id (stable across restarts: nodes.conf)
        self._migrations = {}    # slot -> (src port, dst port)
        used = set()

        def port():
            while True:
                p = free_port()
                if p not in used:
                    used.add(p)
                    return p
        for i in range(masters * (1 + replicas)):
            p, bus = port(), port()
            args = ["--cluster-enabled", "yes", "--cluster-config-file", "nodes.conf",
                    "--cluster-node-timeout", str(node_timeout_ms), "--cluster-port", str(bus),
                    "--appendonly", "no",
                    # replicas sync at once (7.0's default waits 5 s for more of them)
                    "--repl-diskless-sync-delay", "0"]
            if password:
                args += ["--masterauth", password]
            node = RedisServer(self.workdir / ("node%d-%d" % (i, p)), port=p, extra_args=args, password=password)
            node.bus_port = bus
            self.nodes.append(node)

    # ---------------------------------------------------------- processes

    def start(self, timeout=60):
        deadline = time.monotonic() + timeout
        try:
            for node in self.nodes:
                node.start()
            cmd = [REDIS_CLI]
            if self.password:
                cmd += ["-a", self.password, "--no-auth-warning"]
            cmd += ["--cluster", "create"] + self.seeds() + ["--cluster-replicas", str(self.n_replicas),
                                                            "--cluster-yes"]
            res = subprocess.run(cmd, stdin=subprocess.DEVNULL, capture_output=True, text=True,
                                 timeout=max(1.0, deadline - time.monotonic()))
            if res.returncode != 0 or "[OK] All 16384 slots covered" not in res.stdout:
                raise RuntimeError("redis-cli --cluster create failed (rc %d):\n%s\n%s"
                                   % (res.returncode, res.stdout, res.stderr))
            for node in self.nodes:
                self._ids[node.port] = self._client(node.port).execute_command("CLUSTER", "MYID")
            self._wait(lambda: self._settled(all_replicas_up=True), deadline - time.monotonic(),
                       "the cluster to form")
        except BaseException:
            self.stop()
            raise
        return self

    def stop(self):
        for c in self._clients.values():
            try:
                c.close()
            except Exception:
                pass
        self._clients.clear()
        # SIGTERM to all at once: a master stopping waits for its lagging replicas
        # (shutdown-timeout) and none should wait for a peer stopped after it.
        for node in self.nodes:
            if node.proc is not None and node.proc.poll() is None:
                if node.paused:
                    node.resume()
                node.proc.terminate()
        for node in self.nodes:
            node.stop()

    def live_nodes(self):
        """The nodes running (not killed, not paused with RedisServer.pause())."""
        return [n for n in self.nodes if n.proc is not None and n.proc.poll() is None and not n.paused]

    def node(self, port):
        for n in self.nodes:
            if n.port == port:
                return n
        raise KeyError("no node on port %d" % port)

    def node_id(self, port):
        return self._ids[port]

    def port_of_id(self, node_id):
        for port, nid in self._ids.items():
            if nid == node_id:
                return port
        raise KeyError(node_id)

    def seeds(self):
        return ["%s:%d" % (HOST, n.port) for n in self.nodes]

    def node_client(self, port):
        """A plain redis.Redis to one node (decode_responses=True); the caller closes it."""
        return self.node(port).client()

    def cluster_client(self, **kwargs):
        """A redis.cluster.RedisCluster on the seeds (the caller closes it)."""
        from redis.cluster import ClusterNode
        from redis.cluster import RedisCluster as PyRedisCluster
        kwargs.setdefault("decode_responses", True)
        kwargs.setdefault("socket_timeout", 5)
        return PyRedisCluster(startup_nodes=[ClusterNode(HOST, n.port) for n in self.live_nodes()],
                              password=self.password, **kwargs)

    def _client(self, port):
        c = self._clients.get(port)
        if c is None:
            c = self._clients[port] = self.node(port).client()
        return c

    def log_tails(self, lines=15):
        out = []
        for n in self.nodes:
            tail = "\n".join(n.log().splitlines()[-lines:])
            out.append("--- node %d (%s)\n%s" % (n.port, "up" if n in self.live_nodes() else "down", tail))
        return "\n".join(out)

    # ---------------------------------------------------------- state

    def view(self, port):
        """CLUSTER NODES of node `port`, parsed."""
        return parse_cluster_nodes(self._client(port).execute_command("CLUSTER", "NODES"))

    def info(self, port):
        text = self._client(port).execute_command("CLUSTER", "INFO")
        return dict(line.split(":", 1) for line in text.splitlines() if ":" in line)

    def _any_view(self):
        """The view of the first live node that is ok (else of any that answers)."""
        fallback = None
        for n in self.live_nodes():
            try:
                views = self.view(n.port)
                if self.info(n.port).get("cluster_state") == "ok":
                    return views
                fallback = fallback or views
            except redis_lib.RedisError:
                continue
        if fallback is None:
            raise RuntimeError("no live cluster node answers")
        return fallback

    def masters(self):
        """Ports of the nodes that are masters now (and not failed), serving slots or not."""
        return sorted(v.port for v in self._any_view() if v.is_master and not v.failed)

    def master_of_slot(self, slot):
        for v in self._any_view():
            if v.is_master and any(a <= slot <= b for a, b in v.slots):
                return v.port
        raise KeyError("slot %d has no master" % slot)

    def master_of_key(self, key):
        return self.master_of_slot(key_slot(key))

    def replicas_of(self, master_port):
        mid = self._ids[master_port]
        return sorted(v.port for v in self._any_view() if v.master_id == mid and not v.is_master and not v.failed)

    def slots_of(self, master_port):
        """[(start, end)] inclusive ranges served by master_port."""
        for v in self._any_view():
            if v.port == master_port:
                return sorted(v.slots) if v.is_master else []
        return []

    def _slot_set(self, master_port):
        return {s for a, b in self.slots_of(master_port) for s in range(a, b + 1)}

    def _settled(self, all_replicas_up=False):
        """Every live node: cluster_state ok, all slots assigned, the same owner of
        every slot, every owner alive; with all_replicas_up also every live node
        either a master serving slots or a replica whose link to its master is up,
        and no live node seen as failing by another. Returns False (the reason in
        self._why) or True."""
        live = self.live_nodes()
        live_ports = {n.port for n in live}
        reference = None
        roles = {}
        try:
            for n in live:
                info = self.info(n.port)
                if info.get("cluster_state") != "ok" or int(info.get("cluster_slots_assigned", 0)) != SLOTS:
                    self._why = "node %d: state %s, %s slots assigned" % (
                        n.port, info.get("cluster_state"), info.get("cluster_slots_assigned"))
                    return False
                views = self.view(n.port)
                owners = _owner_ranges(views)
                if reference is None:
                    reference = owners
                    dead = {p for _a, _b, p in owners} - live_ports
                    if dead:
                        self._why = "node %d: slots served by down nodes %s" % (n.port, sorted(dead))
                        return False
                elif owners != reference:
                    self._why = "nodes disagree on slot owners: %d sees %s" % (n.port, owners)
                    return False
                if all_replicas_up:
                    me = next(v for v in views if "myself" in v.flags)
                    if me.is_master and not me.slots:
                        self._why = "node %d: a master without slots (not yet a replica)" % n.port
                        return False
                    if not me.is_master:
                        repl = self._client(n.port).info("replication")
                        if repl.get("master_link_status") != "up":
                            self._why = "replica %d: master_link_status %s" % (
                                n.port, repl.get("master_link_status"))
                            return False
                    seen_live = {v.port for v in views if not v.failed}
                    if not live_ports <= seen_live:
                        self._why = "node %d sees %s as failing" % (n.port, sorted(live_ports - seen_live))
                        return False
                    roles[n.port] = {v.port: (v.is_master, v.master_id) for v in views if v.port in live_ports}
        except redis_lib.RedisError as e:
            self._why = "error: %r" % e
            return False
        if all_replicas_up:
            # every node sees every other in the role that one sees itself in
            for port, seen in roles.items():
                for other, role in seen.items():
                    if roles.get(other, {}).get(other) != role:
                        self._why = "node %d sees %d as %s" % (
                            port, other, "a master" if role[0] else "a replica of %s" % role[1])
                        return False
        return True

    def _wait(self, fn, timeout, what, interval=0.05):
        self._why = ""
        deadline = time.monotonic() + max(timeout, 0.0)
        while True:
            try:
                if fn():
                    return
            except redis_lib.RedisError as e:
                self._why = "error: %r" % e
            if time.monotonic() >= deadline:
                raise ClusterTimeout("timed out waiting for %s (%s)\n%s\n%s" % (
                    what, self._why, self._describe(), self.log_tails()))
            time.sleep(interval)

    def _describe(self):
        out = []
        for n in self.live_nodes():
            try:
                out.append("node %d: %s %s" % (n.port, self.info(n.port).get("cluster_state"), self.view(n.port)))
            except redis_lib.RedisError as e:
                out.append("node %d: %r" % (n.port, e))
        return "\n".join(out)

    def wait_settled(self, timeout=60, all_replicas_up=False):
        """Waits until every live node is ok and agrees on the owner of every slot."""
        self._wait(lambda: self._settled(all_replicas_up), timeout, "the cluster to settle")

    def _role(self, port):
        try:
            return self._client(port).execute_command("ROLE")[0]
        except redis_lib.RedisError:
            return None

    # ---------------------------------------------------------- data

    def flushall(self):
        for port in self.masters():
            self._client(port).flushall()

    def _read(self, key, fn):
        """fn(client-or-pipeline, key) on the master of key's slot, following a
        MOVED or an ASK (half-migrated slot: ASKING first)."""
        port, asking = self.master_of_key(key), False
        for _ in range(5):
            try:
                if asking:
                    pipe = self._client(port).pipeline(transaction=False)
                    pipe.execute_command("ASKING")
                    fn(pipe, key)
                    return pipe.execute()[1]
                return fn(self._client(port), key)
            except redis_lib.exceptions.AskError as e:  # MovedError is one too
                port, asking = e.port, not isinstance(e, redis_lib.exceptions.MovedError)
            except redis_lib.exceptions.ResponseError as e:
                msg = str(e).split()
                if msg[:1] not in (["MOVED"], ["ASK"]):
                    raise
                port, asking = int(msg[2].rsplit(":", 1)[1]), msg[0] == "ASK"
        raise RuntimeError("too many redirects reading %r" % key)

    def get(self, key):
        return self._read(key, lambda c, k: c.get(k))

    def read(self, key, command, *args):
        """Any read command on one key: read("k", "HGETALL"); read("k", "ZSCORE", m)."""
        return self._read(key, lambda c, k: c.execute_command(command, k, *args))

    def keys(self, pattern="*"):
        """KEYS pattern on every master, merged and sorted."""
        out = set()
        for port in self.masters():
            out.update(self._client(port).keys(pattern))
        return sorted(out)

    def scan_all(self, pattern="*"):
        """SCAN MATCH pattern on every master, merged and sorted."""
        out = set()
        for port in self.masters():
            out.update(self._client(port).scan_iter(match=pattern, count=1000))
        return sorted(out)

    def values(self, pattern="*"):
        """{key: value} of the string keys matching pattern (counters) on every master."""
        out = {}
        for port in self.masters():
            c = self._client(port)
            for k in c.scan_iter(match=pattern, count=1000, _type="string"):
                out[k] = c.get(k)
        return out

    def find_key_for_master(self, port, prefix="org"):
        """A hash-tag value TAG (prefix0, prefix1, ...) whose slot, key_slot("{TAG}"),
        master `port` serves."""
        slots = self._slot_set(port)
        if not slots:
            raise ValueError("node %d serves no slots" % port)
        for i in range(200000):
            tag = "%s%d" % (prefix, i)
            if key_slot(tag) in slots:
                return tag
        raise ValueError("no tag for node %d" % port)

    # ---------------------------------------------------------- failures

    def kill_master(self, port, timeout=60):
        """SIGKILLs master `port` and waits until one of its replicas serves its slots
        and every live node is ok. Returns the port of the new master."""
        node = self.node(port)
        slots = self._slot_set(port)
        replicas = set(self.replicas_of(port))
        if not replicas:
            raise ValueError("master %d has no replica to take over" % port)
        self._kill(node)

        def promoted():
            if not self._settled():
                return False
            owners = {self.master_of_slot(s) for s in (min(slots), max(slots))} if slots else set()
            return owners <= replicas and all(self._role(p) == "master" for p in owners)
        promoted.__doc__ = "a replica of %d (%s) to serve its slots" % (port, sorted(replicas))
        self._wait(promoted, timeout, "the failover of killed master %d" % port)
        new = self.master_of_slot(min(slots)) if slots else None
        # every slot of the old master, not just the ends
        assert self._slot_set(new) >= slots, "slots of %d split after its failover" % port
        return new

    def kill_node(self, port):
        """SIGKILLs any node and returns at once (no wait for the cluster); a master
        that serves slots: see kill_master."""
        self._kill(self.node(port))

    def _kill(self, node):
        if node.proc is None:
            return
        if node.paused:
            node.resume()
        node.proc.send_signal(signal.SIGKILL)
        node.proc.wait(timeout=10)
        node.proc = None
        self._clients.pop(node.port, None)

    def restart_node(self, port, timeout=60):
        """Starts a killed node again (same nodes.conf): it rejoins, as a replica when
        its slots were taken over. Waits until it has synced and all agree."""
        node = self.node(port)
        assert node.proc is None, "node %d is running" % port
        self._wait(lambda: not port_open(port), 10, "port %d to be free" % port)
        node.start()

        def rejoined():
            return self._settled(all_replicas_up=True)
        rejoined.__doc__ = "node %d to rejoin" % port
        self._wait(rejoined, timeout, "node %d to rejoin" % port)
        return self._role(port)

    def failover(self, replica_port, timeout=60, option=None):
        """CLUSTER FAILOVER [FORCE|TAKEOVER] on a replica; waits until it is master,
        serves its old master's slots and all agree."""
        views = self.view(replica_port)
        me = next(v for v in views if "myself" in v.flags)
        assert not me.is_master, "node %d is not a replica" % replica_port
        old = self.port_of_id(me.master_id)
        slots = self._slot_set(old)
        args = ["CLUSTER", "FAILOVER"] + ([option] if option else [])
        self._client(replica_port).execute_command(*args)

        def done():
            if self._role(replica_port) != "master" or not self._settled(all_replicas_up=True):
                return False
            return not slots or self._slot_set(replica_port) >= slots
        done.__doc__ = "replica %d to take over from %d" % (replica_port, old)
        self._wait(done, timeout, "the failover to %d" % replica_port)

    # ---------------------------------------------------------- resharding

    def begin_migration(self, slot, dst_port):
        """CLUSTER SETSLOT IMPORTING on the destination, then MIGRATING on the source:
        from here on the source answers -ASK for the keys it no longer has."""
        src_port = self.master_of_slot(slot)
        if src_port == dst_port:
            raise ValueError("slot %d is already on %d" % (slot, dst_port))
        src = self._client(src_port)
        dst = self._client(dst_port)
        dst.execute_command("CLUSTER", "SETSLOT", slot, "IMPORTING", self._ids[src_port])
        src.execute_command("CLUSTER", "SETSLOT", slot, "MIGRATING", self._ids[dst_port])
        self._migrations[slot] = (src_port, dst_port)
        return src_port

    def move_keys(self, slot, batch=10, max_batches=1, on_step=None):
        """Moves up to max_batches x batch keys of a slot being migrated (max_batches
        None: all), with CLUSTER GETKEYSINSLOT and MIGRATE ... KEYS; on_step() runs
        after every batch but the last. Returns how many keys moved."""
        src_port, dst_port = self._migrations[slot]
        src = self._client(src_port)
        moved = batches = 0
        while max_batches is None or batches < max_batches:
            keys = src.execute_command("CLUSTER", "GETKEYSINSLOT", slot, batch)
            if not keys:
                break
            if batches and on_step is not None:
                on_step()
            args = ["MIGRATE", HOST, dst_port, "", 0, 5000]
            if self.password:
                args += ["AUTH2", "default", self.password]
            src.execute_command(*(args + ["KEYS"] + list(keys)))
            moved += len(keys)
            batches += 1
        return moved

    def keys_in_slot(self, slot, port=None):
        port = port or self.master_of_slot(slot)
        return int(self._client(port).execute_command("CLUSTER", "COUNTKEYSINSLOT", slot))

    def finish_migration(self, slot, timeout=60):
        """Moves the keys left, then CLUSTER SETSLOT slot NODE dst on the destination,
        the source and every other master; waits until every node agrees."""
        src_port, dst_port = self._migrations[slot]
        self.move_keys(slot, max_batches=None)
        dst_id = self._ids[dst_port]
        self._client(dst_port).execute_command("CLUSTER", "SETSLOT", slot, "NODE", dst_id)
        self._client(src_port).execute_command("CLUSTER", "SETSLOT", slot, "NODE", dst_id)
        for port in self.masters():
            if port not in (src_port, dst_port):
                self._client(port).execute_command("CLUSTER", "SETSLOT", slot, "NODE", dst_id)
        del self._migrations[slot]

        def agreed():
            if not self._settled():
                return False
            for n in self.live_nodes():
                owners = _owner_ranges(self.view(n.port))
                if not any(a <= slot <= b and p == dst_port for a, b, p in owners):
                    return False
            return True
        agreed.__doc__ = "every node to see slot %d on %d" % (slot, dst_port)
        self._wait(agreed, timeout, "slot %d to move to %d" % (slot, dst_port))

    def migrate_slot(self, slot, dst_port, batch=10, on_step=None, timeout=60):
        """The resharding of one slot as redis-cli does it; on_step() runs between
        batches of keys (and once before SETSLOT NODE when there were keys)."""
        self.begin_migration(slot, dst_port)
        moved = self.move_keys(slot, batch=batch, max_batches=None, on_step=on_step)
        if moved and on_step is not None:
            on_step()
        self.finish_migration(slot, timeout=timeout)
        return moved


# ------------------------------------------------------------------ fixtures

@pytest.fixture
def redis_cluster_factory(tmp_path):
    """redis_cluster_factory(masters=3, replicas=1, node_timeout_ms=2000, password=None)
    -> a started RedisCluster, stopped after the test."""
    started = []

    def make(**kwargs):
        c = RedisCluster(tmp_path / ("cluster%d" % len(started)), **kwargs)
        started.append(c)
        return c.start()

    yield make
    for c in started:
        c.stop()


@pytest.fixture
def redis_cluster(redis_cluster_factory):
    """A started 3 masters + 3 replicas cluster (node timeout 2 s), stopped after the test."""
    yield redis_cluster_factory()
