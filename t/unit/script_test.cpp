// The embedded Lua scripts (redis/script.h): every file of
// src/core/redis/scripts/ is there as Redis will run it (its helpers, then
// itself), each named by its SHA-1.
#include <gtest/gtest.h>

#include <dirent.h>

#include <fstream>
#include <set>
#include <sstream>
#include <string>
#include <vector>

#include "base/digest.h"
#include "redis/script.h"

namespace spendcap {
namespace {

std::string read_file(const std::string &path) {
    std::ifstream in(path);
    std::stringstream text;
    text << in.rdbuf();
    return text.str();
}

std::vector<std::string> script_names() {
    std::vector<std::string> names;
    DIR *dir = opendir(SPEND_CAP_SCRIPTS_DIR);
    if (dir == nullptr) return names;
    while (dirent *e = readdir(dir)) {
        const std::string name = e->d_name;
        if (name.size() > 4 && name.compare(name.size() - 4, 4, ".lua") == 0) names.push_back(name.substr(0, name.size() - 4));
    }
    closedir(dir);
    return names;
}

TEST(Digest, KnownVectors) {
    EXPECT_EQ(sha1_hex("abc"), "a9993e364706816aba3e25717850c26c9cd0d89d");
    EXPECT_EQ(sha256_hex("abc"), "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad");
    EXPECT_EQ(sha1_hex(""), "da39a3ee5e6b4b0d3255bfef95601890afd80709");
}

TEST(Scripts, EveryFileIsEmbeddedAfterTheHelpersItUses) {
    const std::vector<std::string> names = script_names();
    ASSERT_GE(names.size(), 20u);
    std::set<std::string> hashes;
    for (const std::string &name : names) {
        const Script &s = lua_script(name);
        const std::string file = read_file(std::string(SPEND_CAP_SCRIPTS_DIR) + "/" + name + ".lua");
        ASSERT_FALSE(file.empty()) << name;
        EXPECT_EQ(s.name, name);
        // the script itself comes last, whole
        ASSERT_GE(s.text.size(), file.size()) << name;
        EXPECT_EQ(s.text.substr(s.text.size() - file.size()), file) << name;
        EXPECT_EQ(s.sha1.size(), 40u) << name;
        EXPECT_TRUE(hashes.insert(s.sha1).second) << name << " has the SHA-1 of another script";
        // every helper it names is in, once
        const std::size_t uses = file.find("-- uses: ");
        if (uses == std::string::npos) {
            EXPECT_EQ(s.text, file) << name << " uses no helper: it is sent as it is";
            continue;
        }
        std::stringstream list(file.substr(uses + 9, file.find('\n', uses) - uses - 9));
        std::string lib;
        while (std::getline(list, lib, ',')) {
            lib.erase(0, lib.find_first_not_of(' '));
            const std::string text = read_file(std::string(SPEND_CAP_SCRIPTS_DIR) + "/lib/" + lib + ".lua");
            ASSERT_FALSE(text.empty()) << name << " uses " << lib;
            const std::size_t at = s.text.find(text);
            EXPECT_NE(at, std::string::npos) << name << " lacks " << lib;
            EXPECT_EQ(s.text.find(text, at + 1), std::string::npos) << name << " has " << lib << " twice";
        }
    }
}

TEST(Scripts, EveryNamedOneExists) {
    for (const Script *s : {&scripts::reserve(), &scripts::settle(), &scripts::sweep(), &scripts::due(),
                            &scripts::release(), &scripts::legacy_due(), &scripts::legacy_read(),
                            &scripts::legacy_release(), &scripts::key_expired(), &scripts::org_records(),
                            &scripts::api_orgs_sample(), &scripts::get(), &scripts::mget(), &scripts::hgetall(),
                            &scripts::hgetall_each(), &scripts::org_read(), &scripts::members(), &scripts::claim_key_id(),
                            &scripts::undo_lookup(), &scripts::put_lookup(), &scripts::project_index(),
                            &scripts::apply(), &scripts::rotate(), &scripts::add_org(), &scripts::topup(),
                            &scripts::cleared(), &scripts::events()}) {
        // each opens with what it takes
        EXPECT_NE(s->text.find("\n-- KEYS:"), std::string::npos) << s->name;
        EXPECT_NE(s->text.find("\n-- ARGV:"), std::string::npos) << s->name;
        EXPECT_FALSE(s->text.empty()) << s->name;
        EXPECT_EQ(s->sha1.size(), 40u) << s->name;
    }
    EXPECT_TRUE(lua_script("no-such-script").sha1.empty());
}

}  // namespace
}  // namespace spendcap
