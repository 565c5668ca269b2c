// The upkeep of an org's reservations (sweep.h).
#include "accounting/sweep.h"

#include <algorithm>

#include "redis/keys.h"

namespace spendcap {

bool counters_named(const std::string &org, const std::string &lines, std::vector<std::string> &keys) {
    const std::string prefix = keys::org_prefix(org);
    std::size_t at = 0;
    while (at < lines.size()) {
        const std::size_t end = lines.find('\n', at);
        const std::size_t space = lines.find(' ', at);
        if (end == std::string::npos || space == std::string::npos || space >= end || space == at
            || space + 1 == end)
            return false;
        std::string key = prefix + lines.substr(space + 1, end - space - 1);
        if (std::find(keys.begin(), keys.end(), key) == keys.end()) keys.push_back(std::move(key));
        at = end + 1;
    }
    return true;
}

ReservationSweep::ReservationSweep(std::string org, std::int64_t most, bool due_only)
    : org_(std::move(org)), most_(std::max<std::int64_t>(most, 1)), due_only_(due_only) {}

std::optional<Command> ReservationSweep::start() {
    if (due_only_) return due();
    stage_ = Stage::cleanup;
    return eval(scripts::sweep(), {keys::settled(org_), keys::released(org_), keys::gone(org_)}, {});
}

std::optional<Command> ReservationSweep::due() {
    stage_ = Stage::due;
    return eval(scripts::due(), {keys::deadlines(org_), keys::reserved(org_)}, {std::to_string(most_)});
}

std::optional<Command> ReservationSweep::legacy_due() {
    if (due_only_) {
        stage_ = Stage::done;
        return std::nullopt;
    }
    stage_ = Stage::legacy_due;
    return eval(scripts::legacy_due(), {keys::legacy_batch_deadlines(org_), keys::legacy_request_deadlines(org_)},
                {std::to_string(most_)});
}

std::optional<Command> ReservationSweep::legacy_next() {
    if (legacy_.empty()) {
        stage_ = Stage::done;
        return std::nullopt;
    }
    stage_ = Stage::legacy_read;
    return eval(scripts::legacy_read(), {keys::legacy_record(org_, legacy_.front().second)}, {});
}

std::optional<Command> ReservationSweep::next(const Reply &reply) {
    switch (stage_) {
    case Stage::cleanup:
        return due();

    case Stage::due:
        return release_due(reply);

    case Stage::release:
        if (reply.is_integer()) given_back_ += reply.integer;
        return legacy_due();

    case Stage::legacy_due:
        return queue_legacy(reply);

    case Stage::legacy_read:
        return release_legacy(reply);

    case Stage::legacy_release:
        if (reply.is_integer()) given_back_ += reply.integer;
        return legacy_next();

    case Stage::done:
        break;
    }
    return std::nullopt;
}

std::optional<Command> ReservationSweep::release_due(const Reply &reply) {
    // {batch, N, N pairs of request id and lines, ...}
    std::vector<std::string> counters, batches;
    const std::vector<Reply> &e = reply.elements;
    std::size_t at = 0;
    bool ok = reply.is_array();
    while (ok && at + 1 < e.size()) {
        ok = e[at].is_string() && e[at + 1].is_integer() && e[at + 1].integer >= 0
             && static_cast<unsigned long long>(e[at + 1].integer) <= (e.size() - at - 2) / 2;
        if (!ok) break;
        batches.push_back(e[at].str);
        const std::size_t n = static_cast<std::size_t>(e[at + 1].integer);
        for (std::size_t k = 0; ok && k < n; ++k) {
            const Reply &lines = e[at + 3 + 2 * k];
            ok = e[at + 2 + 2 * k].is_string() && lines.is_string() && counters_named(org_, lines.str, counters);
        }
        at += 2 + 2 * n;
    }
    if (!ok || at != e.size() || batches.empty()) return legacy_due();
    std::vector<std::string> keys{keys::reserved(org_), keys::deadlines(org_), keys::released(org_)};
    keys.insert(keys.end(), counters.begin(), counters.end());
    std::vector<std::string> args{std::to_string(keys::org_prefix(org_).size())};
    args.insert(args.end(), batches.begin(), batches.end());
    stage_ = Stage::release;
    return eval(scripts::release(), std::move(keys), std::move(args));
}

std::optional<Command> ReservationSweep::queue_legacy(const Reply &reply) {
    // {batch record ids..., "", request ids...}
    if (!reply.is_array()) {
        stage_ = Stage::done;
        return std::nullopt;
    }
    bool requests = false;
    for (const Reply &id : reply.elements) {
        if (!id.is_string()) continue;
        if (id.str.empty()) {
            requests = true;
            continue;
        }
        legacy_.emplace_back(requests ? keys::legacy_request_deadlines(org_) : keys::legacy_batch_deadlines(org_),
                             id.str);
    }
    return legacy_next();
}

std::optional<Command> ReservationSweep::release_legacy(const Reply &reply) {
    // {request id ("" a single request's record), lines, ...}
    std::vector<std::string> counters, markers, ids;
    const std::vector<Reply> &e = reply.elements;
    bool ok = reply.is_array() && e.size() % 2 == 0;
    for (std::size_t k = 0; ok && k < e.size(); k += 2) {
        ok = e[k].is_string() && e[k + 1].is_string() && counters_named(org_, e[k + 1].str, counters);
        if (ok && !e[k].str.empty()) {
            ids.push_back(e[k].str);
            markers.push_back(keys::legacy_released(org_, e[k].str));
        }
    }
    const auto [zset, id] = legacy_.front();
    legacy_.pop_front();
    if (!ok) return legacy_next();  // left for a person to look at; the sweep goes on
    std::vector<std::string> keys{zset, keys::legacy_record(org_, id)};
    keys.insert(keys.end(), markers.begin(), markers.end());
    keys.insert(keys.end(), counters.begin(), counters.end());
    std::vector<std::string> args{std::to_string(keys::org_prefix(org_).size()), id,
                                  std::to_string(ids.size())};
    args.insert(args.end(), ids.begin(), ids.end());
    stage_ = Stage::legacy_release;
    return eval(scripts::legacy_release(), std::move(keys), std::move(args));
}

}  // namespace spendcap
