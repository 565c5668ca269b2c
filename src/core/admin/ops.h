// The management API's calls as short sequences of Redis commands: each call
// is an Operation (operation.cpp; the calls in ops_keys, ops_projects, ops_orgs).
#pragma once

#include <cstdint>
#include <functional>
#include <memory>
#include <optional>
#include <string>
#include <vector>

#include "admin/api.h"
#include "admin/route.h"
#include "admin/views.h"  // key_view, project_view, org_view, file_key_by_id
#include "identity/records.h"
#include "policy/policy.h"
#include "redis/command.h"

namespace spendcap::admin {

struct Response {
    int status = 200;
    std::string body;
    std::string allow;  // 405
    std::string content_type = "application/json";  // the CSV of daily usage: text/csv; charset=utf-8
};

// GET /orgs answers at most this many orgs, the first by id.
constexpr std::size_t kMaxListedOrgs = 10000;

// An Operation says which command to send, hears the reply, and either
// sends the next or has its answer. No NGINX and no socket here: the glue
// (ngx_http_spend_cap_admin.cpp) sends the commands on the event loop, and
// unit tests feed the replies. Every command touches one slot: the global
// ones (sc:key:SHA256, sc:keyid:ID, sc:project:ID) and the org's.
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
    std::optional<Command> finish_csv(std::string body);  // 200 text/csv
    std::optional<Command> fail(const ApiError &error);

    // The machinery and the lookups calls start with (operation.cpp).
    std::optional<Command> dispatch();
    std::optional<Command> with_key(const std::string &id,
                                    std::function<std::optional<Command>(const std::string &org, const Key *file_key)> k);
    std::optional<Command> with_project_org(const std::string &id,
                                            std::function<std::optional<Command>(const std::string &org)> k);
    std::optional<Command> with_org(const std::string &id, std::function<std::optional<Command>()> k);
    // The same, with the periods of the org's time zone now.
    std::optional<Command> with_org_periods(const std::string &id, std::function<std::optional<Command>(const Periods &)> k);
    using RecordsStep = std::function<std::optional<Command>(const OrgRecords &, const std::string &project)>;
    std::optional<Command> with_records(const std::string &org, const std::string &key_id,
                                        const std::string &file_project, RecordsStep k,
                                        const std::string &customer = "");
    std::optional<Command> with_identity(const std::string &org, const std::string &key_id,
                                         const std::string &project, const Key *file_key,
                                         std::function<std::optional<Command>(const Identity &)> k);

    // The calls: keys (ops_keys.cpp), projects (ops_projects.cpp), orgs and
    // what hangs off them (ops_orgs.cpp). project_call and org_call pick
    // their steps by route_.call.
    std::optional<Command> key_create();
    std::optional<Command> keys_list();
    std::optional<Command> key_get(const std::string &id);
    std::optional<Command> key_change(const std::string &id);
    std::optional<Command> key_rotate(const std::string &id);
    std::optional<Command> key_usage(const std::string &id, bool budgets);
    std::optional<Command> key_budgets(const Identity &identity);
    std::optional<Command> self_call();
    // POST /keys/ID/check (ops_check.cpp).
    std::optional<Command> key_check(const std::string &id);
    std::optional<Command> project_call();
    std::optional<Command> project_put(const std::string &id);
    std::optional<Command> project_get(const std::string &id, const std::string &org);
    std::optional<Command> project_usage(const std::string &id, const std::string &org);
    std::optional<Command> project_limits(const std::string &id, const std::string &org);
    std::optional<Command> org_call();
    // The org as org_get answers it, over `record`, with its cleared spend.
    std::optional<Command> org_answer(const std::string &id, int status, const Fields &record);
    std::optional<Command> org_usage(const std::string &id);
    std::optional<Command> org_change(const std::string &id);
    std::optional<Command> customer_call();
    std::optional<Command> balance_get();
    std::optional<Command> topup();
    std::optional<Command> cleared_put();
    std::optional<Command> events_get();
    // The lists (ops_orgs.cpp, ops_projects.cpp) and daily usage (ops_daily.cpp).
    struct OrgsList;
    std::optional<Command> orgs_list();
    std::optional<Command> orgs_read(std::shared_ptr<OrgsList> list);
    std::optional<Command> projects_list();
    std::optional<Command> daily_call();
    std::optional<Command> usage_daily(Scope scope, const std::string &id, const std::string &org);

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

}  // namespace spendcap::admin
