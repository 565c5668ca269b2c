// Redis Cluster as the core knows it: which slot a command belongs to (CRC16
// of its first key's hash tag), who owns each slot (CLUSTER SLOTS), and where
// a MOVED or ASK reply sends a command. The glue keeps the connections.
#pragma once

#include <cstdint>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include "redis/reply.h"

namespace spendcap {

constexpr int kClusterSlots = 16384;

// The slot of a key: CRC16 (XMODEM) of its hash tag (what is between the first
// '{' and the first '}' after it, when not empty) or of the whole key, mod 16384.
int key_slot(std::string_view key);

// The slot of a command: its first key's (EVALSHA SHA NUMKEYS KEY ...).
// -1 when it names no key: any node may run it.
int command_slot(const std::vector<std::string> &argv);

struct NodeAddress {
    std::string host;
    int port = 0;
    std::string name() const { return host + ":" + std::to_string(port); }
    bool operator==(const NodeAddress &o) const { return host == o.host && port == o.port; }
};

// "MOVED 3999 127.0.0.1:6381" / "ASK 3999 127.0.0.1:6381".
struct Redirect {
    enum class Kind { moved, ask } kind = Kind::moved;
    int slot = 0;
    NodeAddress to;
};
std::optional<Redirect> parse_redirect(std::string_view error);

// Who serves each slot: the masters, and for every slot the index of its
// master in `masters` (kUnowned for a slot nobody serves).
struct SlotMap {
    static constexpr std::uint16_t kUnowned = 0xffff;
    std::vector<NodeAddress> masters;
    std::vector<std::uint16_t> owner = std::vector<std::uint16_t>(kClusterSlots, kUnowned);

    const NodeAddress *master_of(int slot) const {
        if (slot < 0 || slot >= kClusterSlots || owner[slot] == kUnowned) return nullptr;
        return &masters[owner[slot]];
    }
    bool complete() const;  // every slot has a master
};

// The map from a CLUSTER SLOTS reply ([start, end, [host, port, id...],
// replicas...] per range). An empty host means the node that answered
// (`asked`). nullopt when the reply is not such a map.
std::optional<SlotMap> parse_cluster_slots(const Reply &reply, const std::string &asked);

}  // namespace spendcap
