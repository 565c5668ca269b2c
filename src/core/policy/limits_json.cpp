// The LIMITS object as JSON, read and written.
#include "policy/limits_json.h"

#include <cstdint>
#include <utility>

#include "base/money.h"
#include "json/writer.h"

namespace spendcap {

bool read_limits(json::ObjectReader &reader, Limits &out) {
    Limits limits;
    const bool ok = reader.only({"daily_usd", "monthly_usd", "lifetime_usd", "daily_requests", "monthly_requests",
                                 "daily_tokens", "monthly_tokens", "rpm", "tpm"}) &&
                    reader.amount("daily_usd", limits.daily_usd) &&
                    reader.amount("monthly_usd", limits.monthly_usd) &&
                    reader.amount("lifetime_usd", limits.lifetime_usd) &&
                    reader.count("daily_requests", limits.daily_requests) &&
                    reader.count("monthly_requests", limits.monthly_requests) &&
                    reader.count("daily_tokens", limits.daily_tokens) &&
                    reader.count("monthly_tokens", limits.monthly_tokens) && reader.count("rpm", limits.rpm) &&
                    reader.count("tpm", limits.tpm);
    if (ok) out = limits;
    return ok;
}

bool read_limits(json::ObjectReader &parent, const char *name, Limits &out) {
    std::optional<json::ObjectReader> reader;
    if (!parent.object_or_null(name, "an object of limits", reader)) return false;
    return !reader || read_limits(*reader, out);
}

std::optional<Limits> parse_limits(std::string_view text, std::string &error) {
    json::Body body;
    if (!json::load_object(text, body, error)) return std::nullopt;
    json::ObjectReader reader(body, error);
    Limits limits;
    if (!read_limits(reader, limits)) return std::nullopt;
    return limits;
}

std::string limits_json(const Limits &limits) {
    json::ObjectWriter object;
    // In the order of Limits, which is the order the SPEC lists them in.
    using Amount = std::pair<const char *, std::optional<Nanos> Limits::*>;
    using Count = std::pair<const char *, std::optional<std::int64_t> Limits::*>;
    for (const Amount &amount : {Amount{"daily_usd", &Limits::daily_usd}, Amount{"monthly_usd", &Limits::monthly_usd},
                                 Amount{"lifetime_usd", &Limits::lifetime_usd}})
        if (limits.*amount.second) object.string(amount.first, format_usd(*(limits.*amount.second)));
    for (const Count &count : {Count{"daily_requests", &Limits::daily_requests},
                               Count{"monthly_requests", &Limits::monthly_requests},
                               Count{"daily_tokens", &Limits::daily_tokens},
                               Count{"monthly_tokens", &Limits::monthly_tokens}, Count{"rpm", &Limits::rpm},
                               Count{"tpm", &Limits::tpm}})
        if (limits.*count.second) object.integer(count.first, *(limits.*count.second));
    return object.done();
}

}  // namespace spendcap
