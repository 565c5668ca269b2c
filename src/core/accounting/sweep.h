// The upkeep of one org's reservations, as a short Redis conversation
// (redis/command.h): forget the markers whose day has passed (sweep.lua);
// give back the reservations whose deadline has passed, their workers dead
// or their settlements lost (due.lua reads them, release.lua gives them back
// naming every counter it touches); then the same for reservations of the
// layout before this one (legacy_*.lua), left by a node not yet upgraded.
#pragma once

#include <cstdint>
#include <deque>
#include <optional>
#include <string>
#include <utility>
#include <vector>

#include "redis/command.h"

namespace spendcap {

// A reserve that met reservations past their deadline ({4}) gives back at
// most this many batches before it is sent again (the periodic sweep takes
// the rest): each is a short script, and the request waits for them.
constexpr std::int64_t kDueBatchesFirst = 8;

class ReservationSweep : public Sequence {
public:
    // `most`: the most batches (and legacy records) given back per call.
    // `due_only`: just the reservations past their deadline (a reserve that
    // would refuse while they hold, ReserveReplyParts::due).
    ReservationSweep(std::string org, std::int64_t most, bool due_only = false);

    std::optional<Command> start() override;
    std::optional<Command> next(const Reply &reply) override;

    // How many requests it gave back so far.
    std::int64_t given_back() const { return given_back_; }

private:
    enum class Stage { cleanup, due, release, legacy_due, legacy_read, legacy_release, done };
    std::optional<Command> due();
    std::optional<Command> legacy_due();
    std::optional<Command> legacy_next();
    // What each reply leads to: due.lua's batches given back (release.lua),
    // legacy_due.lua's records queued, legacy_read.lua's record given back.
    std::optional<Command> release_due(const Reply &reply);
    std::optional<Command> queue_legacy(const Reply &reply);
    std::optional<Command> release_legacy(const Reply &reply);

    std::string org_;
    std::int64_t most_;
    bool due_only_;
    Stage stage_ = Stage::cleanup;
    std::int64_t given_back_ = 0;
    // legacy records to give back: (the sorted set of its deadline, its id)
    std::deque<std::pair<std::string, std::string>> legacy_;
};

// The counters that release lines ("DELTA NAME\n", NAME a counter's key
// without the org's prefix) name, each once, as full keys; false when a line
// is malformed.
bool counters_named(const std::string &org, const std::string &lines, std::vector<std::string> &keys);

}  // namespace spendcap
