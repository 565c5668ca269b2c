// Helpers shared by the usage reader's unit tests.
#pragma once

#include <cstdint>
#include <fstream>
#include <optional>
#include <sstream>
#include <string>

#include "usage/usage.h"

namespace spendcap::test {

// A file under t/unit/data, whole.
inline std::string read_test_data(const std::string &path) {
    std::ifstream in(std::string(SPEND_CAP_TEST_DATA) + "/" + path, std::ios::binary);
    std::stringstream text;
    text << in.rdbuf();
    return text.str();
}

inline Usage make_usage(std::int64_t input, std::int64_t cached_input, std::int64_t cache_write,
                        std::int64_t cache_read, std::int64_t output) {
    Usage u;
    u.input = input;
    u.cached_input = cached_input;
    u.cache_write = cache_write;
    u.cache_read = cache_read;
    u.output = output;
    return u;
}

// Comparable text, so a failing assertion shows every bucket.
inline std::string describe(const Usage &u) {
    return "input=" + std::to_string(u.input) + " cached_input=" + std::to_string(u.cached_input) +
           " cache_write=" + std::to_string(u.cache_write) +
           " cache_read=" + std::to_string(u.cache_read) + " output=" + std::to_string(u.output);
}

inline std::string describe(const std::optional<Usage> &u) {
    return u ? describe(*u) : "none";
}

inline const char *state_name(UsageScanner::State s) {
    switch (s) {
    case UsageScanner::State::reading: return "reading";
    case UsageScanner::State::found: return "found";
    case UsageScanner::State::no_usage: return "no_usage";
    case UsageScanner::State::malformed: return "malformed";
    }
    return "?";
}

}  // namespace spendcap::test
