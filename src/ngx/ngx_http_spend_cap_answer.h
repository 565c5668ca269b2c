// The module's own answers: a JSON body with its status (and the headers
// that go with it), for the refusals of the request path and the management
// API alike.
#pragma once

#include <string>
#include <string_view>
#include <utility>
#include <vector>

#include "ngx.h"

namespace spendcap_ngx {

using ExtraHeaders = std::vector<std::pair<const char *, std::string>>;

// Sends `body` as application/json with `status` and `headers`; the caller
// finalizes the request with the result. The request body, if any is left,
// is discarded first.
ngx_int_t send_json(ngx_http_request_t *r, int status, std::string_view body, const ExtraHeaders &headers = {});
// The same with another Content-Type (copied into the request's pool).
ngx_int_t send_body(ngx_http_request_t *r, int status, std::string_view content_type, std::string_view body,
                    const ExtraHeaders &headers = {});

}  // namespace spendcap_ngx
