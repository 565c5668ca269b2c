// A few named members of a small JSON object, read in one pass without a
// tree (and without an allocation), for the documents jansson (json_loadb,
// JSON_ALLOW_NUL) certainly reads the same way. Callers use it as a fast
// path and ask jansson about everything it is not sure of, so it never has
// to explain an error.
#pragma once

#include <array>
#include <cstddef>
#include <cstdint>
#include <string_view>

namespace spendcap {

struct JsonField {
    enum class Kind { absent, null, boolean, integer, string, object, other };
    Kind kind = Kind::absent;
    bool boolean = false;
    std::int64_t integer = 0;  // an integer of at most 18 digits
    std::string_view text;     // a string's raw content (escapes as written)
    bool escaped = false;      // the string has escapes (`text` is not its value)

    // What jansson's readers here treat alike: not there, or null.
    bool absent_or_null() const { return kind == Kind::absent || kind == Kind::null; }
};

// Which members to keep: up to kMaxRoot of the root object, and up to
// kMaxMembers of each of up to kMaxNested objects held by root members.
struct JsonFieldNames {
    static constexpr std::size_t kMaxRoot = 9, kMaxNested = 3, kMaxMembers = 4;
    std::array<std::string_view, kMaxRoot> root{};
    struct Nested {
        std::string_view object;
        std::array<std::string_view, kMaxMembers> members{};
    };
    std::array<Nested, kMaxNested> nested{};
};

// read(): the named members, each as its last occurrence left it (a later
// duplicate replaces an earlier one, and a later nested object all of an
// earlier one's members, as in jansson). False when it is not sure: the
// document is not a well-formed object, an integer has 19 digits or more, a
// real might overflow a double, nesting passes 512, a string has a lone
// surrogate or a NUL in a key, a key where names are compared has an escape.
class JsonFieldReader {
public:
    explicit JsonFieldReader(const JsonFieldNames &names) : names_(names) {}
    bool read(std::string_view document);
    const JsonField &root(std::size_t i) const { return root_[i]; }
    const JsonField &nested(std::size_t k, std::size_t i) const { return nested_[k][i]; }

private:
    const JsonFieldNames &names_;
    std::array<JsonField, JsonFieldNames::kMaxRoot> root_{};
    std::array<std::array<JsonField, JsonFieldNames::kMaxMembers>, JsonFieldNames::kMaxNested> nested_{};
};

}  // namespace spendcap
