// A command for Redis: EVALSHA of one of the scripts (script.h) with the keys
// it declares and its arguments; and a short conversation of such commands,
// each chosen from the reply to the one before.
#pragma once

#include <optional>
#include <string>
#include <vector>

#include "redis/reply.h"
#include "redis/script.h"

namespace spendcap {

struct Command {
    std::vector<std::string> argv;        // EVALSHA SHA1 NUMKEYS KEYS... ARGS...
    const std::string *script = nullptr;  // its text, sent as EVAL on NOSCRIPT
};

// EVALSHA of `script` with `keys` (every key it touches) and `args`.
Command eval(const Script &script, std::vector<std::string> keys, std::vector<std::string> args);

// Commands sent one after the other: the first, then each reply's next,
// until none is left. The glue sends them; unit tests answer them.
class Sequence {
public:
    virtual ~Sequence() = default;
    virtual std::optional<Command> start() = 0;
    // An error reply is a reply too: the sequence decides what it means.
    virtual std::optional<Command> next(const Reply &reply) = 0;
};

}  // namespace spendcap
