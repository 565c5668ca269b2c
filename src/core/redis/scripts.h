// The Lua scripts that run in Redis (reserve, settle, sweep, key_expired),
// and the SHA-1 that EVALSHA names each by. reservation.h builds their
// arguments and reads their replies.
#pragma once

#include <string>

namespace spendcap {

// Lua sources and their SHA-1 (for EVALSHA; EVAL them on NOSCRIPT). A SHA-1
// is empty if building the script failed (the caller then sends nothing).
const std::string &reserve_script();
const std::string &reserve_script_sha1();
const std::string &settle_script();
const std::string &settle_script_sha1();
const std::string &sweep_script();
const std::string &sweep_script_sha1();
const std::string &key_expired_script();
const std::string &key_expired_script_sha1();

}  // namespace spendcap
