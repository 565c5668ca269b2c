// The management API's calls as short sequences of Redis commands: each call
// is an Operation that says which command to send, hears the reply, and
// either sends the next or has its answer. No NGINX and no socket here: the
// glue (ngx_http_spend_cap_admin.cpp) sends the commands on the event loop,
// and unit tests feed the replies. Every command touches one slot: the
// global ones (sc:key:SHA256, sc:keyid:ID, sc:project:ID) and the org's.
#pragma once

#include <cstdint>
#include <functional>
#include <memory>
#include <optional>
#include <string>
#include <vector>

#include "admin/api.h"
#include "admin/render.h"  // KeyView, ProjectView, OrgView
#include "admin/route.h"
#include "policy/policy.h"
#include "identity/records.h"
#include "redis/command.h"

namespace spendcap::admin {

struct Response {
    int status = 200;
    std::string body;
    std::string allow;  // 405
};

class Operation {
public:
    // `policy` must outlive the operation (the glue holds its shared_ptr).
    // `self_sha256`: for the self-service calls, the hash of the bearer
    // secret. `now_ms`: unix milliseconds (a rotation's grace ends to the
    // millisecond; records keep seconds).
    Operation(const Policy &policy, Route route, std::string body, std::int64_t now_ms, std::string self_sha256 = "");

    // The first command to send, or none when the answer is ready at once
    // (a validation error, a file-only read).
    std::optional<Command> start();
    // The reply to the last command sent; the next command, or none when
    // done. An error reply answers 503 unavailable.
    std::optional<Command> next(const Reply &reply);
    const Response &response() const { return response_; }
    // What the call changed, for the log ("" for reads): "key_created key_1".
    const std::string &change() const { return change_; }

private:
    using Step = std::function<std::optional<Command>(const Reply &)>;
    std::optional<Command> then(Command command, Step step);
    std::optional<Command> finish(int status, std::string body);
    std::optional<Command> fail(const ApiError &error);

    std::optional<Command> dispatch();
    std::optional<Command> with_key(const std::string &id,
                                    std::function<std::optional<Command>(const std::string &org, const Key *file_key)> k);
    std::optional<Command> with_project_org(const std::string &id,
                                            std::function<std::optional<Command>(const std::string &org)> k);
    std::optional<Command> with_org(const std::string &id, std::function<std::optional<Command>()> k);
    using RecordsStep = std::function<std::optional<Command>(const OrgRecords &, const std::string &project)>;
    std::optional<Command> with_records(const std::string &org, const std::string &key_id,
                                        const std::string &file_project, RecordsStep k);
    std::optional<Command> with_identity(const std::string &org, const std::string &key_id,
                                         const std::string &project, const Key *file_key,
                                         std::function<std::optional<Command>(const Identity &)> k);

    std::optional<Command> key_create();
    std::optional<Command> keys_list();
    std::optional<Command> key_get(const std::string &id);
    std::optional<Command> key_change(const std::string &id);
    std::optional<Command> key_rotate(const std::string &id);
    std::optional<Command> key_usage(const std::string &id, bool budgets);
    std::optional<Command> self_call();
    std::optional<Command> project_call();
    std::optional<Command> org_call();
    std::optional<Command> customer_call();
    std::optional<Command> balance_get();
    std::optional<Command> topup();
    std::optional<Command> cleared_put();
    std::optional<Command> events_get();

    const Policy &policy_;
    Route route_;
    std::string body_;
    std::int64_t now_ms_;
    std::int64_t now_;  // seconds
    std::string self_sha256_;
    Step step_;
    Response response_;
    std::string change_;
};

// The views an answer renders, from the file's entity and the org's record
// over it (either may be missing; nullopt when both are).
KeyView key_view(const Key *file_key, const std::string &id, const std::string &org, const Fields &record);
std::optional<ProjectView> project_view(const Policy &policy, const std::string &id, const std::string &org,
                                        const Fields &record);
std::optional<OrgView> org_view(const Policy &policy, const std::string &id, const Fields &record, Nanos cleared);

// The file key with this id, if any (the file indexes keys by hash).
const Key *file_key_by_id(const Policy &policy, const std::string &id);

}  // namespace spendcap::admin
