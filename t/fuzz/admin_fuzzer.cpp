// libFuzzer target: the management API's routing and body parsers on any input.
//
// The first byte picks what is fed the rest: route() (a method, then a path
// and a query split at the first '?'), or one of the body parsers. Invariants
// checked (a violation aborts):
// - nothing crashes, leaks or trips a sanitizer, whatever the bytes;
// - an error answer has a status and a code, and its JSON parses;
// - limits a parser accepted come back the same through limits_json() and
//   parse_limits() (policy/limits_json.h: what the records store is what the API accepted);
// - every answer rendered from an accepted body parses as JSON.
#include <jansson.h>

#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <string>
#include <string_view>

#include "admin/api.h"
#include "admin/body.h"
#include "admin/render.h"
#include "admin/route.h"
#include "policy/limits_json.h"
#include "policy/policy.h"

using namespace spendcap;
using namespace spendcap::admin;

namespace {

#define CHECK(cond)                                                                  \
    do {                                                                             \
        if (!(cond)) {                                                               \
            std::fprintf(stderr, "admin_fuzzer: check failed: %s (line %d)\n", #cond, \
                         __LINE__);                                                  \
            std::abort();                                                            \
        }                                                                            \
    } while (0)

bool parses(const std::string &json) {
    json_error_t error;
    // "\u0000" is valid JSON (an id may hold any byte); jansson wants to be told
    json_t *value = json_loadb(json.data(), json.size(), JSON_DECODE_ANY | JSON_ALLOW_NUL, &error);
    if (value == nullptr) return false;
    json_decref(value);
    return true;
}

bool same(const Limits &a, const Limits &b) {
    return a.daily_usd == b.daily_usd && a.monthly_usd == b.monthly_usd && a.lifetime_usd == b.lifetime_usd &&
           a.daily_requests == b.daily_requests && a.monthly_requests == b.monthly_requests &&
           a.daily_tokens == b.daily_tokens && a.monthly_tokens == b.monthly_tokens && a.rpm == b.rpm &&
           a.tpm == b.tpm;
}

void check_error(const ApiError &e) {
    CHECK(e.status >= 400 && e.status < 600);
    CHECK(!e.code.empty());
    CHECK(parses(render_error(e)));
}

void check_limits(const Limits &limits) {
    const std::string text = limits_json(limits);
    CHECK(parses(text));
    std::string error;
    std::optional<Limits> again = parse_limits(text, error);
    CHECK(again.has_value());
    CHECK(same(*again, limits));
}

const Policy &policy() {
    static const std::shared_ptr<const Policy> p = parse_policy(
        "models:\n  m: { input: 1, output: 2 }\n"
        "plans:\n  free: { limits: { monthly_usd: 1 } }\n"
        "  paid:\n    ceilings:\n      - { cleared_usd: 0, age_days: 0, monthly_usd: 100 }\n"
        "orgs:\n  acme: {}\n",
        "fuzz.yaml");
    return *p;
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t *data, std::size_t size) {
    if (size == 0) return 0;
    const std::string_view input(reinterpret_cast<const char *>(data) + 1, size - 1);
    ApiError error;
    switch (data[0] % 8) {
    case 0: {
        static const char *const methods[] = {"GET", "POST", "PUT", "DELETE", "PATCH", "HEAD"};
        const std::string_view method = methods[input.empty() ? 0 : static_cast<unsigned char>(input[0]) % 6];
        const std::string_view rest = input.empty() ? input : input.substr(1);
        const std::size_t q = rest.find('?');
        Routed routed = route(method, rest.substr(0, q), q == std::string_view::npos ? "" : rest.substr(q + 1));
        if (!routed.route) {
            check_error(routed.error);
            CHECK(routed.error.status != 405 || !routed.error.allow.empty());
        }
        break;
    }
    case 1:
        if (std::optional<KeyCreate> k = parse_key_create(input, error)) {
            check_limits(k->limits);
            KeyView v;
            v.id = k->id.value_or("generated");
            v.name = k->name;
            v.project = k->project;
            v.org = "acme";
            v.limits = k->limits;
            v.expires_at = k->expires_at;
            CHECK(parses(render_key(v, "sk-sc-x")));
        } else {
            check_error(error);
        }
        break;
    case 2:
        if (std::optional<Limits> l = parse_limits_put(input, error)) check_limits(*l);
        else check_error(error);
        break;
    case 3:
        if (std::optional<ProjectPut> p = parse_project_put(input, error)) check_limits(p->limits);
        else check_error(error);
        break;
    case 4:
        if (std::optional<OrgPut> o = parse_org_put(input, policy(), error)) {
            check_limits(o->limits);
            OrgView v;
            v.id = "acme";
            v.plan = o->plan;
            v.created_at = o->created_at;
            v.prepaid = o->prepaid;
            v.low_balance_usd = o->low_balance_usd;
            v.limits = o->limits;
            CHECK(parses(render_org(v)));
        } else {
            check_error(error);
        }
        break;
    case 5:
        if (std::optional<Topup> t = parse_topup(input, error)) {
            CHECK(t->amount > 0 && !t->idempotency_key.empty());
            CHECK(parses(render_topup("acme", *t, t->amount, true)));
        } else {
            check_error(error);
        }
        break;
    case 6:
        if (std::optional<Rotate> r = parse_rotate(input, error)) CHECK(r->grace_seconds >= 0);
        else check_error(error);
        break;
    default:
        if (std::optional<Nanos> c = parse_cleared(input, error)) CHECK(*c >= 0);
        else check_error(error);
        break;
    }
    return 0;
}
