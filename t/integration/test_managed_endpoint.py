"""A managed Redis endpoint (SPEC section 10): a DNS name that moves to the new
primary on a failover. With NGINX's `resolver` set, the module resolves the name
again, without blocking, at each reconnect, and a READONLY answer (a demoted primary
still behind the old address) makes it reconnect. With spend_cap_redis_replicas 1,
a settlement counts as landed only once WAIT confirms a replica holds it, so the
death of the primary right after it answered loses nothing."""

import os
import sys
import threading

import pytest

sys.path.insert(0, os.path.join(os.path.dirname(__file__), ".."))

from dns_server import DnsServer  # noqa: E402
from support import (CHAINS, SECRETS, RedisServer, chat_body, counter_key, free_port, openai_cost,  # noqa: E402
                     post, wait_until)

NAME = "localhost"  # the system resolves it at load; NGINX's resolver asks the test's DNS server
COST = openai_cost("gpt-4o-mini", 100, 10)
TOKENS = {"x-fake-input-tokens": "100", "x-fake-output-tokens": "10"}
K_OPEN = CHAINS["k_open"]
DAILY = counter_key("acme", "spend", "key", "k_open", "daily")


@pytest.fixture
def dns():
    server = DnsServer().start()
    yield server
    server.stop()


def link_up(replica):
    return replica.client().info("replication").get("master_link_status") == "up"


def held(client):
    return [f for f in client.hkeys("sc:{acme}:reserved") if not f.startswith(("@", "#"))]


def spent(client):
    return int(client.get(DAILY) or 0)


def chat(ng, **headers):
    h = dict(TOKENS)
    h.update(headers)
    return post(ng.url, "/v1/chat/completions", chat_body(max_tokens=100), SECRETS["k_open"], headers=h)


def primary_and_replica(tmp_path, port, servers, replicating=True):
    """A primary on 127.0.0.1:PORT and a second server on 127.0.0.2:PORT, its replica
    (or, replicating=False, one that never gets its writes)."""
    primary = RedisServer(tmp_path / "primary", port=port).start()
    servers.append(primary)
    extra = ["--replicaof", "127.0.0.1", str(port)] if replicating else []
    replica = RedisServer(tmp_path / "replica", port=port, bind="127.0.0.2", extra_args=extra).start()
    servers.append(replica)
    if replicating:
        assert wait_until(lambda: link_up(replica), timeout=10)
    return primary, replica


def managed_nginx(nginx_factory, port, dns):
    """One worker, Redis by NAME, NGINX's resolver on the test's DNS server, WAIT 1."""
    return nginx_factory(redis_addr="%s:%d" % (NAME, port), workers=1,
                         http_extra="resolver 127.0.0.1:%d valid=1s ipv6=off;\nspend_cap_redis_replicas 1;" % dns.port)


def held_request(ng, fake, tag):
    """A request the provider holds until released (its reserve answered); -> (thread, answer)."""
    answer = {}
    t = threading.Thread(target=lambda: answer.update(r=chat(ng, **{"x-fake-hold": tag})))
    t.start()
    assert wait_until(lambda: len(fake.requests()) == 1, timeout=10)
    return t, answer


def kill(server):
    server.proc.kill()
    server.proc.wait()
    server.proc = None


def test_the_name_moves_to_the_promoted_replica_and_nothing_is_lost(nginx_factory, tmp_path, fake, dns):
    port = free_port()
    servers = []
    try:
        dns.set(NAME, "127.0.0.1")
        primary, replica = primary_and_replica(tmp_path, port, servers)
        ng = managed_nginx(nginx_factory, port, dns)
        # A request held at the provider: its reservation reaches the replica.
        t, answer = held_request(ng, fake, "a")
        assert wait_until(lambda: len(held(replica.client())) == 1, timeout=10)
        # The replica is cut off (it now serves on its own, as a replica promoted in
        # a partition would): the settlement lands on the primary only, and WAIT 1
        # does not confirm it.
        replica.client().execute_command("REPLICAOF", "NO", "ONE")
        fake.release("a")
        t.join(timeout=30)
        assert answer["r"].status_code == 200
        assert wait_until(lambda: spent(primary.client()) == COST and not held(primary.client()), timeout=10)
        assert wait_until(lambda: "WAIT: fewer replicas" in ng.error_text(), timeout=10)
        assert held(replica.client())  # the replica still holds the reservation

        # The primary dies and the name moves to the replica.
        dns.set(NAME, "127.0.0.2")
        kill(primary)
        # The module reconnects to the name's new address and sends the settlement
        # again: the real cost replaces the reservation the replica had, once.
        r = replica.client()
        assert wait_until(lambda: spent(r) == COST and not held(r), timeout=20), (spent(r), held(r))
        assert "redis localhost:%d is now at 127.0.0.2" % port in ng.error_text()
        assert chat(ng).status_code == 200
        assert wait_until(lambda: spent(r) == 2 * COST, timeout=10)

        # A failover back behind the name, the old address still up: the demoted
        # primary answers READONLY, and the module reconnects to the name's new one.
        third = RedisServer(tmp_path / "third", port=port, bind="127.0.0.3",
                            extra_args=["--replicaof", "127.0.0.2", str(port)]).start()
        servers.append(third)
        assert wait_until(lambda: link_up(third), timeout=10)
        dns.set(NAME, "127.0.0.3")
        third.client().execute_command("REPLICAOF", "NO", "ONE")
        replica.client().execute_command("REPLICAOF", "127.0.0.3", str(port))
        assert wait_until(lambda: link_up(replica), timeout=10)
        statuses = []
        assert wait_until(lambda: statuses.append(chat(ng).status_code) or statuses[-1] == 200, timeout=30), statuses
        assert set(statuses) <= {200, 503}, statuses
        assert "READONLY" in ng.error_text()
        ok = statuses.count(200)
        assert wait_until(lambda: spent(third.client()) == (2 + ok) * COST and not held(third.client()),
                          timeout=10), spent(third.client())
    finally:
        for s in servers:
            s.stop()


def test_a_reservation_the_failover_lost_is_counted_at_its_real_cost_once(nginx_factory, tmp_path, fake, dns):
    """The bound of SPEC section 10: a reservation answered by a primary that died
    before its replica had it is lost, and its request is still counted at its real
    cost, once, when it settles on the promoted replica."""
    port = free_port()
    servers = []
    try:
        dns.set(NAME, "127.0.0.1")
        # The replica never gets the reservation (it is not replicating: the extreme
        # of a replica lagging behind when its primary dies).
        primary, replica = primary_and_replica(tmp_path, port, servers, replicating=False)
        ng = managed_nginx(nginx_factory, port, dns)
        t, answer = held_request(ng, fake, "lost")
        assert len(held(primary.client())) == 1 and not held(replica.client())
        dns.set(NAME, "127.0.0.2")
        kill(primary)
        fake.release("lost")
        t.join(timeout=30)
        assert answer["r"].status_code == 200
        # Its first settlement finds no reservation: the real cost, once, and a marker.
        r = replica.client()
        assert wait_until(lambda: spent(r) == COST, timeout=20), spent(r)
        assert r.zcard("sc:{acme}:settled") == 1
        # The replica has no replica of its own: WAIT keeps the settlement in the
        # backlog, sent again (a no-op) until one confirms it.
        before = int(r.info("commandstats").get("cmdstat_evalsha", {}).get("calls", 0))
        assert wait_until(lambda: int(r.info("commandstats").get("cmdstat_evalsha", {}).get("calls", 0)) > before,
                          timeout=20)
        assert spent(r) == COST and int(r.get("sc:{acme}:settlements") or 0) == 1
    finally:
        for s in servers:
            s.stop()
