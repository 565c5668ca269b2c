"""The Redis Cluster harness (cluster_support.py) and the DNS server
(t/dns_server.py) on their own, without NGINX."""

import os
import socket
import sys
import time

from redis.cluster import RedisCluster as PyRedisCluster

sys.path.insert(0, os.path.dirname(__file__))
sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from cluster_support import SLOTS, _owner_ranges, key_slot, redis_cluster, redis_cluster_factory  # noqa: E402,F401
from dns_server import DnsServer, build_query, parse_response  # noqa: E402


def test_key_slot_known_values():
    assert key_slot("foo") == 12182
    assert key_slot("123456789") == 12739           # CRC16/XMODEM check value 0x31C3
    assert key_slot("{user1000}.following") == key_slot("{user1000}.followers") == key_slot("user1000")
    assert key_slot("foo{}{bar}") == key_slot("foo{}{bar}".encode())  # empty tag: the whole key
    assert key_slot("foo{}{bar}") != key_slot("bar")
    assert key_slot("foo{{bar}}zap") == key_slot("{bar")           # first "{" to the first "}"
    assert key_slot("foo{bar}{zap}") == key_slot("bar")
    assert key_slot("sc:{acme}:balance") == key_slot("{acme}") == key_slot("acme")
    assert all(0 <= key_slot("k%d" % i) < SLOTS for i in range(1000))


def test_cluster_forms_and_answers(redis_cluster):
    c = redis_cluster
    masters = c.masters()
    assert len(masters) == 3 and len(c.nodes) == 6
    assert len(c.seeds()) == 6 and all(s.startswith("127.0.0.1:") for s in c.seeds())
    covered = sorted(r for m in masters for r in c.slots_of(m))
    assert sum(b - a + 1 for a, b in covered) == SLOTS
    for m in masters:
        assert len(c.replicas_of(m)) == 1
        assert c.replicas_of(m)[0] not in masters

    rc = c.cluster_client()
    assert isinstance(rc, PyRedisCluster)
    try:
        for i in range(50):
            rc.set("k%d" % i, i)
        assert [int(rc.get("k%d" % i)) for i in range(50)] == list(range(50))
    finally:
        rc.close()
    # each key lives on the master of its slot, which the helpers read
    for i in range(50):
        key = "k%d" % i
        node = c.node_client(c.master_of_key(key))
        try:
            assert node.get(key) == str(i)
        finally:
            node.close()
        assert c.get(key) == str(i)
    assert c.keys("k*") == sorted("k%d" % i for i in range(50))
    assert c.scan_all("k1*") == sorted(k for k in ("k%d" % i for i in range(50)) if k.startswith("k1"))

    tag = c.find_key_for_master(masters[1], "org")
    assert tag.startswith("org") and c.master_of_key("sc:{%s}:balance" % tag) == masters[1]
    c.flushall()
    assert c.keys("*") == []


def test_migrate_slot_moves_keys(redis_cluster):
    c = redis_cluster
    src, dst = c.masters()[:2]
    tag = c.find_key_for_master(src, "org")
    slot = key_slot("{%s}" % tag)
    keys = ["sc:{%s}:n%d" % (tag, i) for i in range(25)]
    s = c.node_client(src)
    for i, k in enumerate(keys):
        s.set(k, i)
    steps = []
    moved = c.migrate_slot(slot, dst, batch=10, on_step=lambda: steps.append(c.keys_in_slot(slot, src)))
    assert moved == 25
    assert steps == [15, 5, 0]       # between the batches, and once all keys have moved
    assert c.master_of_slot(slot) == dst
    for n in c.live_nodes():          # every node, replicas too, routes the slot to dst
        assert any(a <= slot <= b and p == dst for a, b, p in _owner_ranges(c.view(n.port)))
    d = c.node_client(dst)
    try:
        assert [d.get(k) for k in keys] == [str(i) for i in range(25)]
    finally:
        d.close()
    assert c.keys_in_slot(slot, src) == 0
    rc = c.cluster_client()
    try:
        assert rc.get(keys[7]) == "7"
    finally:
        rc.close()

    # held half-migrated: moved keys answer through ASK, the others on the source
    tag2 = c.find_key_for_master(src, "half")
    slot2 = key_slot("{%s}" % tag2)
    keys2 = ["sc:{%s}:n%d" % (tag2, i) for i in range(6)]
    for i, k in enumerate(keys2):
        s.set(k, i)
    s.close()
    assert c.begin_migration(slot2, dst) == src
    assert c.move_keys(slot2, batch=4) == 4
    assert c.keys_in_slot(slot2, src) == 2
    assert c.master_of_slot(slot2) == src
    assert [c.get(k) for k in keys2] == [str(i) for i in range(6)]
    c.finish_migration(slot2)
    assert c.master_of_slot(slot2) == dst
    assert [c.get(k) for k in keys2] == [str(i) for i in range(6)]


def test_kill_master_promotes_replica(redis_cluster):
    c = redis_cluster
    victim = c.masters()[0]
    replica = c.replicas_of(victim)[0]
    tag = c.find_key_for_master(victim, "org")
    key = "sc:{%s}:balance" % tag
    v = c.node_client(victim)
    try:
        v.set(key, "42")
        assert v.wait(1, 5000) == 1           # the replica has it
    finally:
        v.close()

    t0 = time.monotonic()
    new = c.kill_master(victim)
    took = time.monotonic() - t0
    sys.stderr.write("kill_master failover took %.1f s\n" % took)
    assert new == replica
    assert victim not in c.masters() and replica in c.masters()
    assert c.master_of_key(key) == replica
    assert c.get(key) == "42"

    t0 = time.monotonic()
    assert c.restart_node(victim) == "slave"   # back as a replica of its successor
    sys.stderr.write("restart_node took %.1f s\n" % (time.monotonic() - t0))
    assert c.replicas_of(replica) == [victim]
    t0 = time.monotonic()
    c.failover(victim)                         # and master again
    sys.stderr.write("failover took %.1f s\n" % (time.monotonic() - t0))
    assert c.master_of_key(key) == victim
    assert c.replicas_of(victim) == [replica]
    assert c.get(key) == "42"


# ------------------------------------------------------------------ DNS

def _ask(port, name, qtype=1, qid=0x4242):
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        s.settimeout(5)
        s.sendto(build_query(name, qtype, qid), ("127.0.0.1", port))
        data, _ = s.recvfrom(4096)
    return data


def _hand_built_query(name, qid):
    """A query built byte by byte (not with dns_server's own helper)."""
    q = bytes([qid >> 8, qid & 0xFF, 0x01, 0x00, 0, 1, 0, 0, 0, 0, 0, 0])
    for label in name.split("."):
        q += bytes([len(label)]) + label.encode()
    return q + b"\x00" + b"\x00\x01" + b"\x00\x01"      # type A, class IN


def test_dns_server_answers_and_updates():
    dns = DnsServer(ttl=1).start()
    try:
        dns.set("redis.test", "127.0.0.1")
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
            s.settimeout(5)
            s.sendto(_hand_built_query("redis.test", 0xBEEF), ("127.0.0.1", dns.port))
            data, _ = s.recvfrom(4096)
        assert data[:2] == b"\xbe\xef"
        assert data[2] & 0x80 and data[2] & 0x04           # QR, AA
        assert data[3] & 0x0F == 0                         # NOERROR
        assert data[6:8] == b"\x00\x01"                    # one answer
        assert data[-4:] == bytes([127, 0, 0, 1])
        assert data[-10:-6] == b"\x00\x00\x00\x01"         # TTL 1

        r = parse_response(_ask(dns.port, "REDIS.test."))
        assert r["rcode"] == 0 and r["answers"] == [(1, 1, "127.0.0.1")] and r["qname"] == "REDIS.test"
        r = parse_response(_ask(dns.port, "redis.test", qtype=28))     # AAAA
        assert r["rcode"] == 0 and r["answers"] == []
        r = parse_response(_ask(dns.port, "nope.test"))
        assert r["rcode"] == 3 and r["answers"] == []

        dns.set("redis.test", "127.0.0.2")
        assert parse_response(_ask(dns.port, "redis.test"))["answers"] == [(1, 1, "127.0.0.2")]
        dns.set("redis.test", ["127.0.0.3", "127.0.0.4"])
        assert [a[2] for a in parse_response(_ask(dns.port, "redis.test"))["answers"]] == ["127.0.0.3", "127.0.0.4"]
        dns.set("redis.test", None)
        assert parse_response(_ask(dns.port, "redis.test"))["rcode"] == 3
        assert dns.queries["redis.test"] == 6 and dns.queries["nope.test"] == 1
    finally:
        dns.stop()
