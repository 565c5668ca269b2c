// One webhook attempt over libcurl: POST, TLS verified, 10 s at most, no
// redirect followed; what came back (or why nothing did).
#pragma once

#include <cstdint>
#include <string>
#include <utility>
#include <vector>

namespace spendcap::relay {

struct PostResult {
    long status = 0;          // 0: no answer (connect error, timeout, TLS)
    std::string error;        // why there was no answer
    std::string retry_after;  // the Retry-After header, if any
};

// Called once per process, before any thread posts.
void http_init();

PostResult http_post(const std::string &url, const std::string &body,
                     const std::vector<std::pair<std::string, std::string>> &headers, long timeout_ms = 10000);

}  // namespace spendcap::relay
