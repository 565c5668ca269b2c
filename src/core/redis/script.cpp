// The embedded scripts (scripts/embed_lua.sh writes kSources at build time)
// and their SHA-1, each built once.
#include "redis/script.h"

#include <map>

#include "base/digest.h"

namespace spendcap {

namespace lua {
struct Source {
    const char *name;
    const char *text;
};
extern const Source kSources[];
extern const unsigned kSourceCount;
}  // namespace lua

const Script &lua_script(std::string_view name) {
    static const std::map<std::string, Script, std::less<>> all = [] {
        std::map<std::string, Script, std::less<>> out;
        for (unsigned i = 0; i < lua::kSourceCount; ++i) {
            Script s;
            try {
                s.name = lua::kSources[i].name;
                s.text = lua::kSources[i].text;
                s.sha1 = sha1_hex(s.text);
            } catch (...) {
                s.sha1.clear();  // never sent
            }
            out.emplace(s.name, s);
        }
        return out;
    }();
    static const Script none;
    auto found = all.find(name);
    return found != all.end() ? found->second : none;
}

namespace scripts {
#define SPEND_CAP_SCRIPT(NAME) \
    const Script &NAME() {      \
        return lua_script(#NAME); \
    }
SPEND_CAP_SCRIPT(reserve)
SPEND_CAP_SCRIPT(settle)
SPEND_CAP_SCRIPT(sweep)
SPEND_CAP_SCRIPT(due)
SPEND_CAP_SCRIPT(release)
SPEND_CAP_SCRIPT(legacy_due)
SPEND_CAP_SCRIPT(legacy_read)
SPEND_CAP_SCRIPT(legacy_release)
SPEND_CAP_SCRIPT(key_expired)
SPEND_CAP_SCRIPT(org_records)
SPEND_CAP_SCRIPT(api_orgs_sample)
SPEND_CAP_SCRIPT(get)
SPEND_CAP_SCRIPT(mget)
SPEND_CAP_SCRIPT(hgetall)
SPEND_CAP_SCRIPT(claim_key_id)
SPEND_CAP_SCRIPT(undo_lookup)
SPEND_CAP_SCRIPT(put_lookup)
SPEND_CAP_SCRIPT(project_index)
SPEND_CAP_SCRIPT(apply)
SPEND_CAP_SCRIPT(rotate)
SPEND_CAP_SCRIPT(add_org)
SPEND_CAP_SCRIPT(members)
SPEND_CAP_SCRIPT(hgetall_each)
SPEND_CAP_SCRIPT(org_read)
SPEND_CAP_SCRIPT(topup)
SPEND_CAP_SCRIPT(cleared)
SPEND_CAP_SCRIPT(events)
#undef SPEND_CAP_SCRIPT
}  // namespace scripts

}  // namespace spendcap
