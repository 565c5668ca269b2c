// Which call a management API request makes: its method, path and query
// checked and decoded into a Route, or the error to answer.
#pragma once

#include <map>
#include <optional>
#include <string>
#include <string_view>

#include "admin/api.h"

namespace spendcap::admin {

struct Route {
    Call call = Call::key_get;
    std::string id;        // key / project / org id (empty for key_create, keys_list, self_*)
    std::string customer;  // customer_* calls
    std::map<std::string, std::string> query;  // decoded ?a=b&c=d
};

// `path` is relative to the API's location prefix, without the query
// ("/keys/key_1/limits", "keys/key_1/limits" and a trailing "/" alike);
// `method` as NGINX has it ("GET", ...). 404 for an unknown path or an id
// that valid_id() refuses; 405 with `allow` for a known path and another
// method (HEAD is answered as GET). Query strings are percent-decoded; an unknown parameter or a bad
// count is 400.
struct Routed {
    std::optional<Route> route;
    ApiError error;  // when !route
};
Routed route(std::string_view method, std::string_view path, std::string_view query);

}  // namespace spendcap::admin
