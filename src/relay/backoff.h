// When the relay tries a failed delivery again, and when it stops trying:
// the backoff doubles from retry.first to retry.max, a 429 or 503 may say how
// long to wait (Retry-After), and an event still failing after give_up_after
// goes to the dead-letter stream.
#pragma once

#include <cstdint>
#include <optional>
#include <string_view>

namespace spendcap::relay {

struct RetryConfig {
    std::int64_t first_ms = 1000;
    std::int64_t max_ms = 300000;
    std::int64_t give_up_after_ms = 86400000;
};

// A Retry-After longer than this is taken as this: a receiver must not park
// an org's deliveries for weeks with one header.
constexpr std::int64_t kMaxRetryAfterMs = 86400000;

// The wait before the next attempt after `attempts_failed` failures in a row:
// first_ms, then doubling, never more than max_ms; 0 before any failure.
std::int64_t next_delay_ms(const RetryConfig &retry, int attempts_failed);

// A Retry-After value in ms from now: delta-seconds ("120") or an IMF-fixdate
// ("Sun, 06 Nov 1994 08:49:37 GMT"; a date already past is 0), at most
// kMaxRetryAfterMs. nullopt for anything else (a sign, a fraction, another
// date format, garbage): the caller then uses its own backoff.
std::optional<std::int64_t> parse_retry_after_ms(std::string_view value, std::int64_t now_unix_seconds);

// True once the event's first attempt is give_up_after_ms or more in the past.
bool should_give_up(const RetryConfig &retry, std::int64_t first_attempt_ms, std::int64_t now_ms);

// "250ms", "1s", "5m", "24h": a positive integer and its unit, nothing else.
// 0 when the text is not such a duration or its ms do not fit in 64 bits.
std::int64_t parse_duration_ms(std::string_view text);

}  // namespace spendcap::relay
