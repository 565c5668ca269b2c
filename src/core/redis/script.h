// The Lua scripts that run in Redis: one file each in src/core/redis/scripts/,
// opening with the KEYS and ARGV it takes, embedded with the helpers it uses
// (scripts/lib/) by scripts/embed_lua.sh at build time; and the SHA-1 that
// EVALSHA names each by.
#pragma once

#include <string>
#include <string_view>

namespace spendcap {

struct Script {
    std::string name;  // its file: scripts/NAME.lua
    std::string text;  // as Redis runs it: its helpers, then the script
    std::string sha1;  // "" when it is missing or could not be hashed: callers then send nothing
};

// The script of scripts/NAME.lua, built once (an empty one if there is none).
const Script &lua_script(std::string_view name);

// The scripts the code sends, by name.
namespace scripts {
const Script &reserve();
const Script &settle();
const Script &sweep();
const Script &due();
const Script &release();
const Script &legacy_due();
const Script &legacy_read();
const Script &legacy_release();
const Script &key_expired();
const Script &org_records();
const Script &api_orgs_sample();
const Script &get();
const Script &mget();
const Script &hgetall();
const Script &claim_key_id();
const Script &undo_lookup();
const Script &put_lookup();
const Script &project_index();
const Script &apply();
const Script &rotate();
const Script &add_org();
const Script &members();
const Script &hgetall_each();
const Script &org_read();
const Script &topup();
const Script &cleared();
const Script &events();
}  // namespace scripts

}  // namespace spendcap
