// The LIMITS object as JSON, read and written.
#include "policy/limits_json.h"

#include <cstdint>
#include <utility>

#include "base/money.h"
#include "json/escape.h"
#include "json/writer.h"
#include "policy/model_patterns.h"

namespace spendcap {

namespace {

// `nested`: the limits of one model pattern, which hold no patterns of their own.
bool read_limits(json::ObjectReader &reader, Limits &out, bool nested) {
    Limits limits;
    bool ok = (nested ? reader.only({"daily_usd", "weekly_usd", "monthly_usd", "lifetime_usd", "daily_requests",
                                     "weekly_requests", "monthly_requests", "daily_tokens", "weekly_tokens",
                                     "monthly_tokens", "rpm", "tpm"})
                      : reader.only({"daily_usd", "weekly_usd", "monthly_usd", "lifetime_usd", "daily_requests",
                                     "weekly_requests", "monthly_requests", "daily_tokens", "weekly_tokens",
                                     "monthly_tokens", "rpm", "tpm", "models", "allowed_models"})) &&
              reader.amount("daily_usd", limits.daily_usd) && reader.amount("weekly_usd", limits.weekly_usd) &&
              reader.amount("monthly_usd", limits.monthly_usd) &&
              reader.amount("lifetime_usd", limits.lifetime_usd) &&
              reader.count("daily_requests", limits.daily_requests) &&
              reader.count("weekly_requests", limits.weekly_requests) &&
              reader.count("monthly_requests", limits.monthly_requests) &&
              reader.count("daily_tokens", limits.daily_tokens) &&
              reader.count("weekly_tokens", limits.weekly_tokens) &&
              reader.count("monthly_tokens", limits.monthly_tokens) && reader.count("rpm", limits.rpm) &&
              reader.count("tpm", limits.tpm);
    if (ok && !nested)
        ok = reader.each_object("models", "an object of model patterns and their limits",
                                [&](const std::string &pattern, json::ObjectReader &inner) {
                                    const std::string problem = model_pattern_problem(pattern);
                                    if (!problem.empty())
                                        return reader.fail(reader.label("models") + ": " + problem);
                                    ModelLimits entry{pattern, {}};
                                    if (!read_limits(inner, entry.limits, true)) return false;
                                    limits.models.push_back(std::move(entry));
                                    return true;
                                }) &&
             reader.strings("allowed_models", limits.allowed_models);
    if (ok && limits.allowed_models)
        for (const std::string &pattern : *limits.allowed_models) {
            const std::string problem = model_pattern_problem(pattern);
            if (!problem.empty()) return reader.fail(reader.label("allowed_models") + ": " + problem);
        }
    if (ok) out = std::move(limits);
    return ok;
}

std::string plain_limits_json(const Limits &limits) {
    json::ObjectWriter object;
    // In the order of Limits, which is the order the SPEC lists them in.
    using Amount = std::pair<const char *, std::optional<Nanos> Limits::*>;
    using Count = std::pair<const char *, std::optional<std::int64_t> Limits::*>;
    for (const Amount &amount : {Amount{"daily_usd", &Limits::daily_usd}, Amount{"weekly_usd", &Limits::weekly_usd},
                                 Amount{"monthly_usd", &Limits::monthly_usd},
                                 Amount{"lifetime_usd", &Limits::lifetime_usd}})
        if (limits.*amount.second) object.string(amount.first, format_usd(*(limits.*amount.second)));
    for (const Count &count : {Count{"daily_requests", &Limits::daily_requests},
                               Count{"weekly_requests", &Limits::weekly_requests},
                               Count{"monthly_requests", &Limits::monthly_requests},
                               Count{"daily_tokens", &Limits::daily_tokens},
                               Count{"weekly_tokens", &Limits::weekly_tokens},
                               Count{"monthly_tokens", &Limits::monthly_tokens}, Count{"rpm", &Limits::rpm},
                               Count{"tpm", &Limits::tpm}})
        if (limits.*count.second) object.integer(count.first, *(limits.*count.second));
    if (!limits.models.empty()) {
        json::ObjectWriter models;
        for (const ModelLimits &m : limits.models) models.raw(m.pattern, plain_limits_json(m.limits));
        object.raw("models", models.done());
    }
    if (limits.allowed_models) {
        std::vector<std::string> patterns;
        for (const std::string &p : *limits.allowed_models) {
            std::string quoted;
            append_json_string(quoted, p);
            patterns.push_back(std::move(quoted));
        }
        object.raw("allowed_models", json::json_array(patterns));
    }
    return object.done();
}

}  // namespace

bool read_limits(json::ObjectReader &reader, Limits &out) { return read_limits(reader, out, false); }

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

std::string limits_json(const Limits &limits) { return plain_limits_json(limits); }

}  // namespace spendcap
