#include "redis/cluster.h"

#include <cstdlib>

namespace spendcap {
namespace {

// CRC16/XMODEM (poly 0x1021, init 0), bit by bit: Redis's own table is this.
std::uint16_t crc16(std::string_view data) {
    std::uint16_t crc = 0;
    for (unsigned char byte : data) {
        crc ^= static_cast<std::uint16_t>(byte) << 8;
        for (int bit = 0; bit < 8; ++bit) {
            crc = (crc & 0x8000) != 0 ? static_cast<std::uint16_t>((crc << 1) ^ 0x1021)
                                      : static_cast<std::uint16_t>(crc << 1);
        }
    }
    return crc;
}

std::optional<int> parse_port(std::string_view text) {
    if (text.empty() || text.size() > 5) return std::nullopt;
    int port = 0;
    for (char c : text) {
        if (c < '0' || c > '9') return std::nullopt;
        port = port * 10 + (c - '0');
    }
    if (port < 1 || port > 65535) return std::nullopt;
    return port;
}

// "host:port" (the host may be an IPv6 address: the port follows the last ':').
std::optional<NodeAddress> parse_address(std::string_view text) {
    const std::size_t colon = text.rfind(':');
    if (colon == std::string_view::npos || colon == 0) return std::nullopt;
    std::optional<int> port = parse_port(text.substr(colon + 1));
    if (!port) return std::nullopt;
    return NodeAddress{std::string(text.substr(0, colon)), *port};
}

std::optional<NodeAddress> node_of(const Reply &node, const std::string &asked) {
    if (!node.is_array() || node.elements.size() < 2 || !node.elements[1].is_integer()) return std::nullopt;
    const Reply &host = node.elements[0];
    if (!host.is_string() || host.str == "?") return std::nullopt;
    const long long port = node.elements[1].integer;
    if (port < 1 || port > 65535) return std::nullopt;
    return NodeAddress{host.str.empty() ? asked : host.str, static_cast<int>(port)};
}

}  // namespace

int key_slot(std::string_view key) {
    const std::size_t open = key.find('{');
    if (open != std::string_view::npos) {
        const std::size_t close = key.find('}', open + 1);
        if (close != std::string_view::npos && close > open + 1) key = key.substr(open + 1, close - open - 1);
    }
    return crc16(key) % kClusterSlots;
}

int command_slot(const std::vector<std::string> &argv) {
    if (argv.size() < 4) return -1;
    const std::string &numkeys = argv[2];
    if (numkeys.empty() || numkeys == "0" || numkeys[0] < '0' || numkeys[0] > '9') return -1;
    return key_slot(argv[3]);
}

std::optional<Redirect> parse_redirect(std::string_view error) {
    Redirect out;
    if (error.rfind("MOVED ", 0) == 0) {
        out.kind = Redirect::Kind::moved;
        error.remove_prefix(6);
    } else if (error.rfind("ASK ", 0) == 0) {
        out.kind = Redirect::Kind::ask;
        error.remove_prefix(4);
    } else {
        return std::nullopt;
    }
    const std::size_t space = error.find(' ');
    if (space == std::string_view::npos || space == 0 || space > 5) return std::nullopt;
    int slot = 0;
    for (char c : error.substr(0, space)) {
        if (c < '0' || c > '9') return std::nullopt;
        slot = slot * 10 + (c - '0');
    }
    if (slot >= kClusterSlots) return std::nullopt;
    std::optional<NodeAddress> to = parse_address(error.substr(space + 1));
    if (!to) return std::nullopt;
    out.slot = slot;
    out.to = std::move(*to);
    return out;
}

bool SlotMap::complete() const {
    for (std::uint16_t o : owner) {
        if (o == kUnowned) return false;
    }
    return true;
}

std::optional<SlotMap> parse_cluster_slots(const Reply &reply, const std::string &asked) {
    if (!reply.is_array()) return std::nullopt;
    SlotMap map;
    for (const Reply &range : reply.elements) {
        if (!range.is_array() || range.elements.size() < 3 || !range.elements[0].is_integer()
            || !range.elements[1].is_integer())
            return std::nullopt;
        const long long first = range.elements[0].integer, last = range.elements[1].integer;
        if (first < 0 || last < first || last >= kClusterSlots) return std::nullopt;
        std::optional<NodeAddress> master = node_of(range.elements[2], asked);
        if (!master) continue;  // a master without a known endpoint: its slots stay unowned
        std::size_t index = 0;
        while (index < map.masters.size() && !(map.masters[index] == *master)) ++index;
        if (index == map.masters.size()) {
            if (map.masters.size() >= SlotMap::kUnowned) return std::nullopt;
            map.masters.push_back(std::move(*master));
        }
        for (long long slot = first; slot <= last; ++slot) map.owner[slot] = static_cast<std::uint16_t>(index);
    }
    return map;
}

}  // namespace spendcap
