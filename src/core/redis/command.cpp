// EVALSHA commands.
#include "redis/command.h"

namespace spendcap {

Command eval(const Script &script, std::vector<std::string> keys, std::vector<std::string> args) {
    Command c;
    c.script = &script.text;
    c.argv.reserve(3 + keys.size() + args.size());
    c.argv.push_back("EVALSHA");
    c.argv.push_back(script.sha1);
    c.argv.push_back(std::to_string(keys.size()));
    for (std::string &k : keys) c.argv.push_back(std::move(k));
    for (std::string &a : args) c.argv.push_back(std::move(a));
    return c;
}

}  // namespace spendcap
