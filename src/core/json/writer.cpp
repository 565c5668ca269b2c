// JSON objects and arrays written by hand, members in the order they are written.
#include "json/writer.h"

#include <utility>

#include "base/periods.h"
#include "json/escape.h"

namespace spendcap::json {

ObjectWriter &ObjectWriter::string(std::string_view name, std::string_view value) {
    key(name);
    append_json_string(out_, value);
    return *this;
}

ObjectWriter &ObjectWriter::string_or_null(std::string_view name, std::string_view value) {
    return value.empty() ? null(name) : string(name, value);
}

ObjectWriter &ObjectWriter::integer(std::string_view name, std::int64_t value) {
    key(name);
    out_ += std::to_string(value);
    return *this;
}

ObjectWriter &ObjectWriter::integer(std::string_view name, const std::optional<std::int64_t> &value) {
    return value ? integer(name, *value) : null(name);
}

ObjectWriter &ObjectWriter::boolean(std::string_view name, bool value) {
    key(name);
    out_ += value ? "true" : "false";
    return *this;
}

ObjectWriter &ObjectWriter::null(std::string_view name) {
    key(name);
    out_ += "null";
    return *this;
}

ObjectWriter &ObjectWriter::raw(std::string_view name, std::string_view json) {
    key(name);
    out_ += json;
    return *this;
}

ObjectWriter &ObjectWriter::amount(std::string_view name, const std::optional<Nanos> &nanos) {
    const std::string base(name);
    if (!nanos) return null(base + "_nanousd").null(base + "_usd");
    return integer(base + "_nanousd", *nanos).string(base + "_usd", format_usd(*nanos));
}

ObjectWriter &ObjectWriter::time(std::string_view name, const std::optional<std::int64_t> &unix_seconds) {
    return unix_seconds ? string(name, format_rfc3339(*unix_seconds)) : null(name);
}

ObjectWriter &ObjectWriter::reset_time(std::string_view name, std::int64_t unix_seconds) {
    return unix_seconds != 0 ? string(name, format_rfc3339(unix_seconds)) : null(name);
}

std::string ObjectWriter::done() {
    out_ += '}';
    return std::move(out_);
}

void ObjectWriter::key(std::string_view name) {
    if (!first_) out_ += ',';
    first_ = false;
    append_json_string(out_, name);
    out_ += ':';
}

std::string json_array(const std::vector<std::string> &elements) {
    std::string out = "[";
    for (std::size_t i = 0; i < elements.size(); ++i) {
        if (i) out += ',';
        out += elements[i];
    }
    out += ']';
    return out;
}

}  // namespace spendcap::json
