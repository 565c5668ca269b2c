// The request body's fields through the one-pass reader (json_fields.h);
// a body it is not sure of, or one parse_request_body would refuse, goes to
// jansson, so this path never has to explain an error.
#include "request/scan.h"

#include "json/fields.h"

namespace spendcap {

namespace {

enum RootField { model, max_tokens, max_completion_tokens, max_output_tokens, n, best_of, stream, stream_options };

const JsonFieldNames &request_names() {
    static const JsonFieldNames names = [] {
        JsonFieldNames v;
        v.root = {"model", "max_tokens", "max_completion_tokens", "max_output_tokens",
                  "n",     "best_of",    "stream",                "stream_options"};
        v.nested[0].object = "stream_options";
        v.nested[0].members = {"include_usage"};
        return v;
    }();
    return names;
}

}  // namespace

std::optional<RequestInfo> scan_request_body(std::string_view body) {
    try {
        JsonFieldReader reader(request_names());
        if (!reader.read(body)) return std::nullopt;
        RequestInfo info;
        const JsonField &name = reader.root(model);
        if (name.kind != JsonField::Kind::string || name.escaped || name.text.empty()) return std::nullopt;
        info.model.assign(name.text);
        for (int field : {max_tokens, max_completion_tokens, max_output_tokens}) {
            const JsonField &bound = reader.root(field);
            if (bound.absent_or_null()) continue;
            if (bound.kind != JsonField::Kind::integer || bound.integer < 0) return std::nullopt;
            if (!info.max_output_tokens || bound.integer > *info.max_output_tokens)
                info.max_output_tokens = bound.integer;
        }
        for (int field : {n, best_of}) {
            const JsonField &choices = reader.root(field);
            if (choices.absent_or_null()) continue;
            if (choices.kind != JsonField::Kind::integer || choices.integer < 1) return std::nullopt;
            if (choices.integer > info.choices) info.choices = choices.integer;
        }
        const JsonField &flag = reader.root(stream);
        if (!flag.absent_or_null()) {
            if (flag.kind != JsonField::Kind::boolean) return std::nullopt;
            info.stream = flag.boolean;
        }
        const JsonField &options = reader.root(stream_options);
        if (!options.absent_or_null()) {
            if (options.kind != JsonField::Kind::object) return std::nullopt;
            const JsonField &include = reader.nested(0, 0);
            if (!include.absent_or_null()) {
                if (include.kind != JsonField::Kind::boolean) return std::nullopt;
                info.include_usage = include.boolean;
            }
        }
        return info;
    } catch (...) {
        return std::nullopt;  // out of memory copying the model: jansson will say so
    }
}

}  // namespace spendcap
