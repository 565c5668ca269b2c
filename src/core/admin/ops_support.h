// Helpers the management API's calls share (admin/ops_*.cpp, and views.cpp
// for to_int): apply script arguments and replies, counters read from
// replies, conflict answers.
#pragma once

#include <cstdint>
#include <optional>
#include <string>
#include <utility>
#include <vector>

#include "admin/api.h"
#include "identity/records.h"
#include "redis/reply.h"

namespace spendcap::admin {

using Pairs = std::vector<std::pair<std::string, std::string>>;

// apply_script's reply: false when its precondition failed (or it is malformed).
// `changed` false: its guard found the change already made (no event).
bool applied(const Reply &r, Fields &fields, bool &existed, bool *changed = nullptr);

// apply_script's ARGV: the audit event gets `by: api` after `event`'s fields.
// `guard`: the field and value that say the change is already made.
std::vector<std::string> apply_args(const char *need, const std::string &member, const char *type,
                                    const Pairs &event, const Pairs &set, const std::vector<std::string> &del,
                                    const std::pair<std::string, std::string> &guard = {});

// The 409 for a change the policy file's own entity cannot take ("project", "projects", id).
ApiError file_owned(const char *what, const char *path, const std::string &id);

// A counter's value: nil is 0; anything else not an integer reads as 0 too
// (the request path refuses to count on it; a read should still answer).
std::int64_t to_int(const std::string &text);
std::int64_t to_int(const Reply &r);

// A record's time field: unix seconds, "" for none.
std::string opt_time(const std::optional<std::int64_t> &t);

}  // namespace spendcap::admin
