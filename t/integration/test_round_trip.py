"""All checks in one round trip: with customers, a prepaid balance, rates, request and
token caps, warn_at and a ceilings plan all configured, an allowed request costs
Redis one reserve and one settle EVALSHA (each may carry other requests of the same
org, ready in the same event loop iteration) and nothing else; and the settlements
that end together share one script call."""

import datetime as dt

from support import (SECRETS, RedisMonitor, balance_key, chat_body, default_policy, evalsha_keys, fresh_minute,
                     is_barrier, is_reserve, is_settle, is_sweep, is_sweep_script_load, messages_body, monitor_barrier, post, rate_key,
                     redis_int, reserve_requests,
                     rfc3339, set_limits, settle_requests, usd_nanos, utc_now, wait_settled, wait_until)

N = 6


def everything_policy():
    pol = default_policy()
    pol["warn_at"] = ["0.5", "0.8"]
    pol["plans"] = {"paid": {"ceilings": [
        {"cleared_usd": 0, "age_days": 0, "monthly_usd": 100},
        {"cleared_usd": 100, "age_days": 14, "monthly_usd": 1000},
    ]}}
    created = rfc3339((utc_now() - dt.timedelta(days=30)).replace(microsecond=0))
    pol["orgs"]["acme"] = {"plan": "paid", "created_at": created, "prepaid": True, "low_balance_usd": "1",
                           "limits": {"daily_usd": "50", "daily_requests": 1000, "monthly_tokens": 10_000_000,
                                      "rpm": 1000, "tpm": 10_000_000}}
    set_limits(pol, "project", {"monthly_requests": 1000, "rpm": 500})
    set_limits(pol, "key", {"daily_requests": 100, "daily_tokens": 1_000_000, "rpm": 100, "tpm": 1_000_000})
    set_limits(pol, "customer", {"monthly_usd": "1", "rpm": 100, "tpm": 1_000_000, "daily_tokens": 1_000_000})
    set_limits(pol, "customer", {"monthly_usd": "5"}, ident="cust_42")
    return pol


def test_two_evalsha_per_allowed_request(nginx_factory, redis, redis_server, fake):
    ng = nginx_factory(policy=everything_policy(), workers=1,
                       location_extra="spend_cap_customer $http_x_customer_id;")
    redis.set(balance_key("acme"), usd_nanos("10"))
    redis.set("sc:{acme}:cleared", usd_nanos("150"))
    p = fresh_minute(margin=10)

    def call(i):
        customer = {"x-customer-id": "cust_42" if i % 2 else "cust_%d" % i}
        if i % 3 == 2:
            return post(ng.url, "/v1/messages", messages_body(), SECRETS["k1"], key_header="x-api-key",
                        headers=customer)
        body = chat_body(stream=True) if i % 3 == 1 else chat_body()
        return post(ng.url, "/v1/chat/completions", body, SECRETS["k1"], headers=customer)

    # warm up: the worker's connection and both scripts are loaded
    assert call(0).status_code == 200
    wait_settled(redis, 1)
    redis.config_resetstat()

    with RedisMonitor(redis_server.port) as mon:
        before = redis.info("commandstats")  # MONITOR shows this INFO: it opens the window counted below
        rids = []
        for i in range(1, N + 1):
            r = call(i)
            assert r.status_code == 200, r.text
            rids.append(r.headers["x-test-request-id"])

        def nginx_commands():
            return [args for client, args in mon.commands() if client != "lua"]
        assert wait_until(lambda: len(nginx_commands()) >= 2 * N)
        wait_settled(redis, N + 1)
        barrier = monitor_barrier(mon, ng)  # MONITOR's last lines are in
        sent = [args for args in nginx_commands() if not is_barrier(args, barrier)]
        after = redis.info("commandstats")  # ... and this one closes it
        infos = lambda: [i for i, (client, args) in enumerate(mon.commands())
                         if client != "lua" and [a.lower() for a in args] == ["info", "commandstats"]]
        assert wait_until(lambda: len(infos()) >= 2), "MONITOR did not show both INFO commands"
        opened, closed = infos()[:2]
        window = mon.commands()[opened + 1:closed]
    # our own client issued only the INFOs, and the GET sc:{acme}:settlements and
    # HGETALL sc:{acme}:reserved of wait_settled:
    # everything else is NGINX's, and apart from the per-request commands, worker 0
    # sweeps each org once a second (is_sweep: a few EVALSHA, each naming the keys it
    # touches)
    sent = [args for args in sent if args[0].upper() not in ("SCAN", "INFO")
            and args not in (["GET", "sc:{acme}:settlements"], ["HGETALL", "sc:{acme}:reserved"])]
    sweeps = [args for args in sent if is_sweep(args)]
    # (the sweeper's first call after a start meets NOSCRIPT and loads its script)
    sweeps += [args for args in sent if is_sweep_script_load(args)]
    sent = [args for args in sent if args not in sweeps]
    names = [args[0].upper() for args in sent]
    reserves = [args for args in sent if is_reserve(args)]
    settles = [args for args in sent if is_settle(args)]
    assert names == ["EVALSHA"] * len(sent) and len(reserves) + len(settles) == len(sent), \
        "expected reserve and settle EVALSHA only, got %s" % [args[:3] for args in sent]
    # exactly one reserve round trip per request, before it is forwarded: every request
    # is in exactly one reserve call, and those calls carry nothing else
    reserved = [rid for args in reserves for rid in reserve_requests(args)[1]]
    assert sorted(reserved) == sorted(rids), "requests in the reserve calls: %s, sent: %s" % (reserved, rids)
    for args in reserves:
        batch, members = reserve_requests(args)
        assert batch == members[0], (batch, members)
        assert "sc:{acme}:reserved" in evalsha_keys(args)
    # and exactly one settlement each, as answered requests of the batch that reserved them
    batch_of = {rid: reserve_requests(args)[0] for args in reserves for rid in reserve_requests(args)[1]}
    settled = [item for args in settles for item in settle_requests(args)]
    assert sorted(item[0] for item in settled) == sorted(rids), settled
    assert all(answered and batch == batch_of[rid] for rid, batch, answered in settled), settled
    assert len(reserves) <= N and len(settles) <= N

    # Redis itself counted no script call MONITOR did not show between the two INFOs,
    # and those are the requests', the barrier's and the sweeper's
    calls_of = lambda stats: stats.get("cmdstat_evalsha", {}).get("calls", 0)
    counted = calls_of(after) - calls_of(before)
    shown = [args for client, args in window if client != "lua" and args[0].upper() == "EVALSHA"]
    assert counted == len(shown), (counted, len(shown))
    # (the barrier's lookups are EVALSHA too, the first of a worker twice: NOSCRIPT, then
    # loaded and sent again)
    calls = len(reserves) + len(settles) + sum(1 for args in shown if is_barrier(args, barrier))
    assert len(shown) == calls + sum(1 for args in shown if is_sweep(args)), \
        [args[:4] for args in shown if not is_reserve(args) and not is_settle(args)]
    assert "cmdstat_eval" not in after, after.get("cmdstat_eval")

    # and every feature did take part
    assert redis_int(redis, balance_key("acme")) < usd_nanos("10")
    assert redis.get(rate_key("acme", "customer", "cust_42", "rpm", p)) == str(N // 2)
    assert redis.get(rate_key("acme", "org", "acme", "rpm", p)) == str(N + 1)


def test_settlements_ending_together_share_one_script_call(nginx_factory, redis, redis_server, fake):
    """40 answers that reach the worker in the same event loop iteration (it is
    stopped while they arrive) settle in one script call per org, which writes
    each counter once; every request is still counted exactly."""
    import os
    import signal
    import threading
    from support import CHAINS, all_counter_keys, openai_cost, read_counters
    ng = nginx_factory(workers=1)
    assert post(ng.url, "/v1/chat/completions", chat_body(), SECRETS["k1"]).status_code == 200
    wait_settled(redis, 1)
    worker = next(int(p) for p in os.listdir("/proc") if p.isdigit() and _parent(p) == ng.proc.pid)
    n = 40
    results = []
    # Each answer is held by the provider until the worker is stopped, then all
    # are written while it is: every wait below is for the event it needs (all
    # requests arrived, all answers written), bounded generously for a busy box.
    threads = [threading.Thread(target=lambda: results.append(post(
        ng.url, "/v1/chat/completions", chat_body(), SECRETS["k1"], headers={"x-fake-hold": "batch"}, timeout=120)))
        for _ in range(n)]
    with RedisMonitor(redis_server.port) as mon:
        for t in threads:
            t.start()
        assert wait_until(lambda: len(fake.requests()) >= n + 1, timeout=6), \
            "%d of %d requests reached the provider" % (len(fake.requests()) - 1, n)
        os.kill(worker, signal.SIGSTOP)
        try:
            fake.release("batch")
            answered = lambda: sum(1 for e in fake.requests() if e.get("response_complete")) >= n + 1
            assert wait_until(answered, timeout=6), "the provider did not write all %d answers" % n
        finally:
            os.kill(worker, signal.SIGCONT)
        for t in threads:
            t.join(120)
        assert [r.status_code for r in results] == [200] * n
        wait_settled(redis, n + 1, timeout=6)
        # MONITOR's last lines: the settle calls of all n requests
        settled_in_monitor = lambda: sum(len(settle_requests(args)) for client, args in mon.commands()
                                         if client != "lua" and is_settle(args)) >= n
        assert wait_until(settled_in_monitor)
        # a settle call's keys end with the events stream, the deadlines and the
        # settlement count; its arguments name the requests it settles
        settles = [args for client, args in mon.commands() if client != "lua" and is_settle(args)]
    covered = sorted(len(settle_requests(args)) for args in settles)
    assert sum(covered) == n and len(covered) < 10, "settle calls and the requests each covered: %s" % covered
    rids = sorted(r.headers["x-test-request-id"] for r in results)
    assert sorted(item[0] for args in settles for item in settle_requests(args)) == rids
    # each counted once: the settlement count is the requests', not the calls'
    assert int(redis.get("sc:{acme}:settlements")) == n + 1
    cost = openai_cost("gpt-4o-mini", 10, 20)
    keys = all_counter_keys(CHAINS["k1"], "spend")
    assert read_counters(redis, keys) == {k: (n + 1) * cost for k in keys}


def _parent(pid):
    try:
        with open("/proc/%s/stat" % pid) as f:
            return int(f.read().rsplit(")", 1)[1].split()[1])
    except OSError:
        return None


def test_one_worker_per_node_sweeps(nginx_factory, redis_server):
    """Expired reservations are given back by one worker of a node (worker 0), not
    by every worker each second: four workers, five sweep rounds, one connection."""
    ng = nginx_factory(workers=4)
    with RedisMonitor(redis_server.port) as mon:
        rounds = lambda: [client for client, args in mon.commands()
                          if client != "lua" and is_sweep(args) and evalsha_keys(args) == ["sc:orgs"]]
        assert wait_until(lambda: len(rounds()) >= 5, timeout=3), "the sweeper did not run five rounds"
        sweepers = {client for client, args in mon.commands() if client != "lua" and is_sweep(args)}
    assert len(sweepers) == 1, sweepers
