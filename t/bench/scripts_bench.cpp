// Redis's cost of the reserve and settle scripts alone, per batch size: a
// batch of M requests of one key (the bench policy's caps: key daily,
// monthly and lifetime, project monthly, org daily) is reserved and then
// settled, ROUNDS times, and EVALSHA's usec (INFO commandstats, Redis's own
// clock) is read around each call. Run by scripts/bench_scripts.sh; a tool,
// not the module: it may use hiredis's blocking API.
#include <hiredis/hiredis.h>

#include <algorithm>
#include <cstdio>
#include <cstdlib>
#include <ctime>
#include <string>
#include <vector>

#include "base/digest.h"
#include "accounting/ledger.h"
#include "redis/script.h"
#include "policy/policy.h"
#include "request/request.h"
#include "accounting/reservation.h"

using namespace spendcap;

namespace {

redisReply *run(redisContext *c, const std::vector<std::string> &argv) {
    std::vector<const char *> args;
    std::vector<size_t> lengths;
    for (const std::string &a : argv) {
        args.push_back(a.data());
        lengths.push_back(a.size());
    }
    return static_cast<redisReply *>(redisCommandArgv(c, static_cast<int>(args.size()), args.data(), lengths.data()));
}

double evalsha_usec(redisContext *c) {
    auto *r = static_cast<redisReply *>(redisCommand(c, "INFO commandstats"));
    if (r == nullptr || r->type != REDIS_REPLY_STRING) return -1;
    const std::string s(r->str, r->len);
    freeReplyObject(r);
    const std::size_t at = s.find("cmdstat_evalsha:");
    if (at == std::string::npos) return 0;
    return std::atof(s.c_str() + s.find("usec=", at) + 5);
}

double median(std::vector<double> v) {
    std::sort(v.begin(), v.end());
    return v.empty() ? 0 : v[v.size() / 2];
}

}  // namespace

int main(int argc, char **argv) {
    if (argc < 4) {
        std::fprintf(stderr, "usage: %s PORT ROUNDS M...\n", argv[0]);
        return 2;
    }
    const int port = std::atoi(argv[1]), rounds = std::atoi(argv[2]);
    const std::string yaml =
        "models:\n  gpt-4o-mini: { input: 0.15, output: 0.60, cached_input: 0.075, max_output_tokens: 16384 }\n"
        "orgs:\n  bench: { limits: { daily_usd: 1000000 } }\n"
        "projects:\n  bench-prod: { org: bench, limits: { monthly_usd: 1000000 } }\n"
        "keys:\n  - { id: key_bench, sha256: " + sha256_hex("sk-bench") +
        ", project: bench-prod, limits: { daily_usd: 1000000, monthly_usd: 1000000, lifetime_usd: 1000000 } }\n";
    const auto policy = parse_policy(yaml, "bench.yaml");
    const Key *key = policy->find_key(sha256_hex("sk-bench"));
    const auto ledger = std::make_shared<const Ledger>(ledger_for(*policy, *key, "", periods_at(std::time(nullptr))));
    redisContext *c = redisConnect("127.0.0.1", port);
    if (c == nullptr || c->err) {
        std::fprintf(stderr, "cannot connect to 127.0.0.1:%d\n", port);
        return 1;
    }
    for (const std::string *script : {&scripts::reserve().text, &scripts::settle().text})
        freeReplyObject(redisCommand(c, "SCRIPT LOAD %b", script->data(), script->size()));
    std::printf("batch  reserve µs/call  settle µs/call  reserve µs/req  settle µs/req   (medians of %d)\n", rounds);
    long id = 0;
    const Amounts estimate{300000, 1000, 1}, real{7200, 21, 1};
    for (int a = 3; a < argc; ++a) {
        const int m = std::atoi(argv[a]);
        std::vector<double> reserve_us, settle_us;
        for (int k = 0; k < rounds; ++k) {
            std::vector<ReserveItem> reserves;
            std::vector<SettleItem> settles;
            const std::string batch = "b" + std::to_string(id);
            for (int j = 0; j < m; ++j) {
                const std::string rid = "r" + std::to_string(id++);
                reserves.push_back(ReserveItem{ledger, estimate, rid, false});
                settles.push_back(SettleItem{ledger, estimate, real, rid, std::nullopt, batch, true});
            }
            for (auto [command, out] : {std::pair{reserve_batch_command(reserves, batch), &reserve_us},
                                        std::pair{settle_batch_command(settles), &settle_us}}) {
                const double before = evalsha_usec(c);
                redisReply *r = run(c, command);
                if (r == nullptr || r->type == REDIS_REPLY_ERROR) {
                    std::fprintf(stderr, "script error: %s\n", r != nullptr ? r->str : c->errstr);
                    return 1;
                }
                freeReplyObject(r);
                out->push_back(evalsha_usec(c) - before);
            }
        }
        const double r = median(reserve_us), s = median(settle_us);
        std::printf("%5d  %15.1f  %14.1f  %14.2f  %13.2f\n", m, r, s, r / m, s / m);
    }
    // The floor under any script that keeps SPEC section 6's counters: an
    // EVALSHA that only INCRBYs N distinct keys (9 is one key's spend, reqs
    // and tokens over d, m and life; 27 adds its project's and org's).
    std::printf("\nfloor: EVALSHA of N INCRBY on distinct keys, nothing else (median µs per call)\n");
    redisReply *loaded = run(c, {"SCRIPT", "LOAD", "for i = 1, #KEYS do redis.call('INCRBY', KEYS[i], 7) end return 1"});
    if (loaded == nullptr || loaded->type != REDIS_REPLY_STRING) return 1;
    const std::string floor_sha(loaded->str, loaded->len);
    freeReplyObject(loaded);
    for (int n : {0, 1, 9, 27}) {
        std::vector<std::string> command{"EVALSHA", floor_sha, std::to_string(n)};
        for (int i = 0; i < n; ++i) command.push_back("sc:{bench}:floor:" + std::to_string(i));
        std::vector<double> us;
        for (int k = 0; k < rounds; ++k) {
            const double before = evalsha_usec(c);
            redisReply *r = run(c, command);
            if (r == nullptr) return 1;
            freeReplyObject(r);
            us.push_back(evalsha_usec(c) - before);
        }
        std::printf("%5d  %15.1f\n", n, median(us));
    }
    redisFree(c);
    return 0;
}
