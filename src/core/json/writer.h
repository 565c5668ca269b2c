// JSON objects and arrays written by hand, members in the order they are
// written (the documented order of an answer), every string escaped.
#pragma once

#include <cstdint>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include "base/money.h"

namespace spendcap::json {

// One JSON object, its members appended in the order they are written.
class ObjectWriter {
public:
    ObjectWriter &string(std::string_view name, std::string_view value);
    // "" is written as null.
    ObjectWriter &string_or_null(std::string_view name, std::string_view value);
    ObjectWriter &integer(std::string_view name, std::int64_t value);
    ObjectWriter &integer(std::string_view name, const std::optional<std::int64_t> &value);
    ObjectWriter &boolean(std::string_view name, bool value);
    ObjectWriter &null(std::string_view name);
    // `json` is already JSON text (a nested object or array).
    ObjectWriter &raw(std::string_view name, std::string_view json);
    // Every amount twice: NAME_nanousd (integer) and NAME_usd (exact decimal).
    ObjectWriter &amount(std::string_view name, const std::optional<Nanos> &nanos);
    // RFC 3339, or null.
    ObjectWriter &time(std::string_view name, const std::optional<std::int64_t> &unix_seconds);
    // A reset time where 0 means none.
    ObjectWriter &reset_time(std::string_view name, std::int64_t unix_seconds);
    // The object's text; the writer is spent.
    std::string done();

private:
    void key(std::string_view name);

    std::string out_ = "{";
    bool first_ = true;
};

// [e1,e2,...] from elements that are already JSON text.
std::string json_array(const std::vector<std::string> &elements);

}  // namespace spendcap::json
