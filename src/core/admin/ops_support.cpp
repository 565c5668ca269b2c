// Helpers the management API's calls share (admin/ops_support.h).
#include "admin/ops_support.h"

namespace spendcap::admin {

bool applied(const Reply &r, Fields &fields, bool &existed, bool *changed) {
    if (r.type != Reply::Type::array || r.elements.size() != 3 || r.elements[0].type != Reply::Type::integer
        || r.elements[2].type != Reply::Type::integer)
        return false;
    existed = r.elements[0].integer == 1;
    if (changed != nullptr) *changed = r.elements[2].integer == 1;
    return fields_of(r.elements[1], fields);
}

ApiError file_owned(const char *what, const char *path, const std::string &id) {
    return conflict(std::string(what) + " `" + id + "` is in the policy file, which owns it: override its limits "
                    "with PUT /" + path + "/" + id + "/limits");
}

std::vector<std::string> apply_args(const char *need, const std::string &member, const char *type,
                                    const Pairs &event, const Pairs &set, const std::vector<std::string> &del,
                                    const std::pair<std::string, std::string> &guard) {
    std::vector<std::string> args{need, member, type, std::to_string(event.size() + 1)};
    for (const auto &f : event) {
        args.push_back(f.first);
        args.push_back(f.second);
    }
    args.push_back("by");
    args.push_back("api");
    args.push_back(std::to_string(set.size()));
    for (const auto &f : set) {
        args.push_back(f.first);
        args.push_back(f.second);
    }
    args.push_back(std::to_string(del.size()));
    for (const auto &d : del) args.push_back(d);
    args.push_back(guard.first);
    args.push_back(guard.second);
    return args;
}

std::int64_t to_int(const std::string &text) {
    std::int64_t v = 0;
    return parse_int64(text, v) ? v : 0;
}

std::int64_t to_int(const Reply &r) {
    if (r.type == Reply::Type::integer) return r.integer;
    return r.type == Reply::Type::string ? to_int(r.str) : 0;
}

std::string opt_time(const std::optional<std::int64_t> &t) { return t ? std::to_string(*t) : ""; }

}  // namespace spendcap::admin
