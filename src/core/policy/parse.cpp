// Reading and validating the policy file (SPEC section 2) into a Policy. Every mistake
// names the file and line: a typo in a cap must fail the load, never loosen a cap.
#include "policy/policy.h"

#include <atomic>

#include <yaml-cpp/yaml.h>

#include "base/zones.h"
#include "policy/model_patterns.h"

#include <cerrno>
#include <cstdio>
#include <cstring>
#include <functional>
#include <limits>
#include <utility>
#include <vector>

namespace spendcap {


namespace {

int line_of(const YAML::Mark &mark) { return mark.line >= 0 ? mark.line + 1 : 0; }
int line_of(const YAML::Node &node) { return line_of(node.Mark()); }

std::string quoted(const std::string &name) { return "`" + name + "`"; }

class PolicyParser {
public:
    PolicyParser(std::string file, Policy &policy) : file_(std::move(file)), policy_(policy) {}

    void parse_document(const YAML::Node &root) {
        if (!root.IsDefined() || root.IsNull())
            fail(0, "the policy file is empty (expected models, orgs, projects and keys)");
        if (!root.IsMap()) fail(root, "the policy must be a mapping of models, orgs, projects and keys");

        std::optional<std::pair<YAML::Node, YAML::Node>> unknown_model_field;  // key, value
        for_each_field(root, "the top level", [&](const std::string &name, const YAML::Node &key,
                                                  const YAML::Node &value) {
            if (name == "models")
                parse_models(value);
            else if (name == "unknown_model")
                unknown_model_field = std::make_pair(key, value);
            else if (name == "default_max_output_tokens")
                policy_.default_max_output_tokens = positive_integer(value, "`default_max_output_tokens`");
            else if (name == "default_context_window")
                policy_.default_context_window = positive_integer(value, "`default_context_window`");
            else if (name == "orgs")
                parse_orgs(value);
            else if (name == "projects")
                parse_projects(value);
            else if (name == "keys")
                parse_keys(value);
            else if (name == "warn_at")
                parse_warn_at(value);
            else if (name == "plans")
                parse_plans(value);
            else if (name == "customers")
                parse_customers(value);
            else
                fail(key, "unknown field " + quoted(name) + " in the top level");
        });

        // Cross references are checked once every section is read, so the
        // sections may come in any order.
        if (unknown_model_field) {
            current_field_line_ = line_of(unknown_model_field->first);
            check_unknown_model(unknown_model_field->second);
            current_field_line_ = 0;
        }
        for (const auto &[project_id, org_line] : project_org_lines_) {
            const Project &project = policy_.projects.at(project_id);
            if (!policy_.orgs.count(project.org))
                fail(org_line, "project " + quoted(project_id) + " names org " + quoted(project.org) +
                                   ", which is not defined in `orgs`");
        }
        for (const auto &[sha256, project_line] : key_project_lines_) {
            const Key &key = policy_.keys_by_sha256.at(sha256);
            if (!policy_.projects.count(key.project))
                fail(project_line, "key " + quoted(key.id) + " names project " + quoted(key.project) +
                                       ", which is not defined in `projects`");
        }
        for (const auto &[org_id, plan_line] : org_plan_lines_) {
            const Org &org = policy_.orgs.at(org_id);
            auto plan = policy_.plans.find(org.plan);
            if (plan == policy_.plans.end())
                fail(plan_line, "org " + quoted(org_id) + " names plan " + quoted(org.plan) +
                                    ", which is not defined in `plans`");
            // The ceilings' age_days are counted from created_at.
            if (!plan->second.ceilings.empty() && !org.limits.monthly_usd && !org.created_at)
                fail(plan_line, "org " + quoted(org_id) + " is on plan " + quoted(org.plan) +
                                    ", whose monthly ceiling rises with account age: it needs "
                                    "`created_at` (or a `monthly_usd` of its own)");
        }
    }

private:
    using FieldVisitor =
        std::function<void(const std::string &name, const YAML::Node &key, const YAML::Node &value)>;

    [[noreturn]] void fail(int line, const std::string &reason) const {
        throw PolicyError(file_, line, reason);
    }
    // An empty value ("input:" and nothing) is marked where the next token
    // starts, often lines later; blame the field's own line instead.
    [[noreturn]] void fail(const YAML::Node &at, const std::string &reason) const {
        fail(at.IsNull() && current_field_line_ > 0 ? current_field_line_ : line_of(at), reason);
    }

    // Visits a mapping's fields in file order. YAML parsers keep duplicate
    // keys silently (one wins); here a duplicate is an error.
    void for_each_field(const YAML::Node &map, const std::string &where, const FieldVisitor &visit) {
        std::map<std::string, int> first_lines;
        for (auto it = map.begin(); it != map.end(); ++it) {
            const YAML::Node key = it->first;
            if (!key.IsScalar()) fail(key, "field names in " + where + " must be plain strings");
            const std::string &name = key.Scalar();
            auto [earlier, inserted] = first_lines.emplace(name, line_of(key));
            if (!inserted)
                fail(key, "duplicate field " + quoted(name) + " in " + where + " (first at line " +
                              std::to_string(earlier->second) + ")");
            const int outer_field_line = current_field_line_;
            current_field_line_ = line_of(key);
            visit(name, key, it->second);
            current_field_line_ = outer_field_line;
        }
    }

    // A section may be left empty ("orgs:" with nothing under it).
    bool expect_map_or_empty(const YAML::Node &node, const std::string &what) {
        if (node.IsNull()) return false;
        if (!node.IsMap()) fail(node, what + " must be a mapping");
        return true;
    }

    std::string string_value(const YAML::Node &node, const std::string &what) {
        if (!node.IsScalar() || node.Scalar().empty()) fail(node, what + " must be a non-empty string");
        return node.Scalar();
    }

    // Org, project, key and customer ids become parts of Redis keys such as
    // sc:{ORG}:spend:key:ID:m:2026-11, so they must not break that layout.
    std::string id_value(const YAML::Node &node, const std::string &what) {
        std::string id = string_value(node, what);
        if (!valid_id(id))
            fail(node, what + " " + quoted(id) + " " + kIdRule);
        return id;
    }

    // Plain decimal digits only: no sign, point, exponent or overflow.
    static bool parse_count(const YAML::Node &node, std::int64_t &value) {
        const std::string text = node.IsScalar() ? node.Scalar() : std::string();
        value = 0;
        if (text.empty()) return false;
        for (char c : text) {
            if (c < '0' || c > '9' || value > (std::numeric_limits<std::int64_t>::max() - (c - '0')) / 10)
                return false;
            value = value * 10 + (c - '0');
        }
        return true;
    }

    std::int64_t positive_integer(const YAML::Node &node, const std::string &what) {
        std::int64_t value = 0;
        if (!parse_count(node, value) || value <= 0) fail(node, what + " must be a positive integer");
        return value;
    }

    // Request and token caps: 0 is a cap too (it blocks every request).
    std::int64_t non_negative_integer(const YAML::Node &node, const std::string &what) {
        std::int64_t value = 0;
        if (!parse_count(node, value)) fail(node, what + " must be a non-negative integer");
        return value;
    }

    bool bool_value(const YAML::Node &node, const std::string &what) {
        bool value = false;
        if (!node.IsScalar() || !YAML::convert<bool>::decode(node, value)) fail(node, what + " must be true or false");
        return value;
    }

    // Amounts come from the scalar's own text: going through double would
    // turn 0.15 into 0.1499999... and break exact money.
    Nanos usd_amount(const YAML::Node &node, const std::string &what) {
        if (!node.IsScalar()) fail(node, what + " must be a decimal USD amount");
        Nanos amount = 0;
        std::string error;
        if (!parse_usd(node.Scalar(), amount, error))
            fail(node, what + " is not an exact decimal amount (\"" + node.Scalar() + "\"): " + error);
        return amount;
    }

    void parse_models(const YAML::Node &models) {
        if (!expect_map_or_empty(models, "`models`")) return;
        for_each_field(models, "`models`", [&](const std::string &name, const YAML::Node &name_node,
                                               const YAML::Node &body) {
            const std::string where = "model " + quoted(name);
            if (name.empty()) fail(name_node, "a model name must not be empty");
            if (!body.IsMap()) fail(body.IsNull() ? name_node : body, where + " must be a mapping of prices");
            ModelPrice price;
            price.name = name;
            // `output` may be absent, as for embedding models in SPEC section 2
            // (priced 0); `input` may not: every request has input tokens.
            bool has_input = false;
            for_each_field(body, where, [&](const std::string &field, const YAML::Node &key,
                                            const YAML::Node &value) {
                const std::string what = quoted(field) + " of " + where;
                if (field == "input") {
                    price.input = usd_amount(value, what);
                    has_input = true;
                } else if (field == "output") {
                    price.output = usd_amount(value, what);
                } else if (field == "cached_input") {
                    price.cached_input = usd_amount(value, what);
                } else if (field == "cache_write") {
                    price.cache_write = usd_amount(value, what);
                } else if (field == "cache_write_1h") {
                    price.cache_write_1h = usd_amount(value, what);
                } else if (field == "cache_read") {
                    price.cache_read = usd_amount(value, what);
                } else if (field == "max_output_tokens") {
                    price.max_output_tokens = positive_integer(value, what);
                } else if (field == "context_window") {
                    price.context_window = positive_integer(value, what);
                } else {
                    fail(key, "unknown field " + quoted(field) + " in " + where);
                }
            });
            if (!has_input) fail(name_node, where + " is missing `input`");
            // Anthropic bills a one-hour cache write at twice the input price.
            if (price.cache_write && !price.cache_write_1h)
                price.cache_write_1h = saturating_add(price.input, price.input);
            policy_.models[name] = std::move(price);
        });
    }

    void check_unknown_model(const YAML::Node &node) {
        const std::string name = string_value(node, "`unknown_model`");
        if (name != "reject" && !policy_.models.count(name))
            fail(node, "`unknown_model` names model " + quoted(name) +
                           ", which is not in `models` (use `reject` or a listed model)");
        policy_.unknown_model = name;
    }

    // The `limits` field of a key, project, org or plan.
    Limits parse_limits(const YAML::Node &node, const std::string &owner) {
        return parse_limits(node, "limits of " + owner, "`limits` of " + owner);
    }

    // `where` names the limits in field messages, `what` the mapping itself.
    // `nested`: the limits of one model pattern, which hold no patterns of their own.
    Limits parse_limits(const YAML::Node &node, const std::string &where, const std::string &what,
                        bool nested = false) {
        Limits limits;
        if (!expect_map_or_empty(node, what)) return limits;
        using Amount = std::optional<Nanos> Limits::*;
        using Count = std::optional<std::int64_t> Limits::*;
        static const std::map<std::string, Amount> kAmounts = {
            {"daily_usd", &Limits::daily_usd}, {"weekly_usd", &Limits::weekly_usd},
            {"monthly_usd", &Limits::monthly_usd}, {"lifetime_usd", &Limits::lifetime_usd}};
        static const std::map<std::string, Count> kCounts = {
            {"daily_requests", &Limits::daily_requests}, {"weekly_requests", &Limits::weekly_requests},
            {"monthly_requests", &Limits::monthly_requests}, {"daily_tokens", &Limits::daily_tokens},
            {"weekly_tokens", &Limits::weekly_tokens}, {"monthly_tokens", &Limits::monthly_tokens},
            {"rpm", &Limits::rpm}, {"tpm", &Limits::tpm}};
        for_each_field(node, where, [&](const std::string &field, const YAML::Node &key,
                                        const YAML::Node &value) {
            const std::string field_what = quoted(field) + " in " + where;
            if (auto amount = kAmounts.find(field); amount != kAmounts.end())
                limits.*(amount->second) = usd_amount(value, field_what);
            else if (auto count = kCounts.find(field); count != kCounts.end())
                limits.*(count->second) = non_negative_integer(value, field_what);
            else if (field == "models" && !nested)
                limits.models = parse_model_limits(value, where);
            else if (field == "allowed_models" && !nested)
                limits.allowed_models = parse_allowed_models(value, field_what);
            else if (nested && (field == "models" || field == "allowed_models"))
                fail(key, quoted(field) + " cannot be nested in " + where);
            else
                fail(key, "unknown field " + quoted(field) + " in " + where);
        });
        return limits;
    }

    std::string model_pattern(const YAML::Node &node, const std::string &what) {
        const std::string pattern = node.IsScalar() ? node.Scalar() : std::string();
        const std::string problem = model_pattern_problem(pattern);
        if (!problem.empty()) fail(node, what + ": " + problem + " (got " + quoted(pattern) + ")");
        return pattern;
    }

    // `models: {PATTERN: LIMITS}` of a LIMITS object.
    std::vector<ModelLimits> parse_model_limits(const YAML::Node &node, const std::string &where) {
        std::vector<ModelLimits> out;
        const std::string what = "`models` in " + where;
        if (!expect_map_or_empty(node, what)) return out;
        for_each_field(node, what, [&](const std::string &pattern, const YAML::Node &key, const YAML::Node &value) {
            ModelLimits entry;
            entry.pattern = model_pattern(key, "a pattern of " + what);
            const std::string inner = "limits of model " + quoted(pattern) + " in " + where;
            entry.limits = parse_limits(value, inner, "`" + pattern + "` in " + what, true);
            out.push_back(std::move(entry));
        });
        return out;
    }

    // `allowed_models: [PATTERN, ...]`.
    std::vector<std::string> parse_allowed_models(const YAML::Node &node, const std::string &what) {
        if (!node.IsSequence()) fail(node, what + " must be a list of model patterns such as [gpt-4o-mini, \"claude-*\"]");
        std::vector<std::string> out;
        for (const YAML::Node &entry : node) out.push_back(model_pattern(entry, "an entry of " + what));
        return out;
    }

    // "0.50" and "0.5" are one fraction: the label is rebuilt from the value.
    static std::string fraction_label(std::int64_t billionths) {
        if (billionths >= kNanosPerUsd) return "1";
        std::string digits = std::to_string(billionths);
        digits.insert(0, 9 - digits.size(), '0');
        digits.erase(digits.find_last_not_of('0') + 1);
        return "0." + digits;
    }

    void parse_warn_at(const YAML::Node &node) {
        if (node.IsNull()) return;
        if (!node.IsSequence()) fail(node, "`warn_at` must be a list of fractions such as [0.5, 0.8, 0.95]");
        std::map<std::int64_t, int> first_lines;  // billionths -> line
        for (const YAML::Node &entry : node) {
            if (!entry.IsScalar()) fail(entry, "`warn_at` entries must be decimal fractions such as 0.8");
            const std::string &text = entry.Scalar();
            std::int64_t billionths = 0;
            std::string error;
            if (!parse_usd(text, billionths, error))
                fail(entry, "`warn_at` entry \"" + text + "\" is not an exact decimal fraction: " + error);
            if (billionths <= 0 || billionths > kNanosPerUsd)
                fail(entry, "`warn_at` entry \"" + text + "\" must be more than 0 and at most 1");
            auto [earlier, inserted] = first_lines.emplace(billionths, line_of(entry));
            if (!inserted)
                fail(entry, "duplicate `warn_at` fraction " + fraction_label(billionths) + " (first at line " +
                                std::to_string(earlier->second) + ")");
        }
        for (const auto &[billionths, line] : first_lines)  // a std::map: ascending
            policy_.warn_at.push_back(WarnFraction{fraction_label(billionths), billionths});
    }

    void parse_plans(const YAML::Node &plans) {
        if (!expect_map_or_empty(plans, "`plans`")) return;
        for_each_field(plans, "`plans`", [&](const std::string &, const YAML::Node &name_node,
                                             const YAML::Node &body) {
            Plan plan;
            plan.name = id_value(name_node, "plan name");
            const std::string where = "plan " + quoted(plan.name);
            if (!body.IsMap())
                fail(body.IsNull() ? name_node : body, where + " must be a mapping with `limits` or `ceilings`");
            for_each_field(body, where, [&](const std::string &field, const YAML::Node &key,
                                            const YAML::Node &value) {
                if (field == "limits")
                    plan.limits = parse_limits(value, where);
                else if (field == "ceilings")
                    plan.ceilings = parse_ceilings(value, key, where);
                else
                    fail(key, "unknown field " + quoted(field) + " in " + where);
            });
            // Two monthly caps for one org would leave the operator guessing which applies.
            if (!plan.ceilings.empty() && plan.limits.monthly_usd)
                fail(name_node, where + " has both `ceilings` and `limits.monthly_usd`; "
                                        "its ceilings are its monthly cap");
            policy_.plans[plan.name] = std::move(plan);
        });
    }

    std::vector<CeilingRow> parse_ceilings(const YAML::Node &node, const YAML::Node &key,
                                           const std::string &plan_where) {
        const std::string what = "`ceilings` of " + plan_where;
        if (!node.IsSequence() || node.size() == 0)
            fail(node.IsNull() ? key : node, what + " must be a non-empty list of rows");
        std::vector<CeilingRow> rows;
        for (const YAML::Node &entry : node) {
            const std::string where = "ceilings row " + std::to_string(rows.size() + 1) + " of " + plan_where;
            if (!entry.IsMap())
                fail(entry, where + " must be a mapping with `cleared_usd`, `age_days` and `monthly_usd`");
            CeilingRow row;
            bool has_cleared = false, has_age = false, has_monthly = false;
            for_each_field(entry, where, [&](const std::string &field, const YAML::Node &field_key,
                                             const YAML::Node &value) {
                const std::string field_what = quoted(field) + " in " + where;
                if (field == "cleared_usd") {
                    row.cleared_usd = usd_amount(value, field_what);
                    has_cleared = true;
                } else if (field == "age_days") {
                    row.age_days = non_negative_integer(value, field_what);
                    has_age = true;
                } else if (field == "monthly_usd") {
                    row.monthly_usd = usd_amount(value, field_what);
                    has_monthly = true;
                } else {
                    fail(field_key, "unknown field " + quoted(field) + " in " + where);
                }
            });
            if (!has_cleared) fail(entry, where + " is missing `cleared_usd`");
            if (!has_age) fail(entry, where + " is missing `age_days`");
            if (!has_monthly) fail(entry, where + " is missing `monthly_usd`");
            if (rows.empty() && (row.cleared_usd != 0 || row.age_days != 0))
                fail(entry, "the first ceilings row of " + plan_where +
                                " must have cleared_usd 0 and age_days 0, so every org on the plan has a ceiling");
            rows.push_back(row);
        }
        return rows;
    }

    void parse_customers(const YAML::Node &customers) {
        if (!expect_map_or_empty(customers, "`customers`")) return;
        for_each_field(customers, "`customers`", [&](const std::string &field, const YAML::Node &key,
                                                     const YAML::Node &value) {
            if (field == "default_limits") {
                policy_.customers.default_limits =
                    parse_limits(value, "`customers.default_limits`", "`customers.default_limits`");
            } else if (field == "overrides") {
                if (!expect_map_or_empty(value, "`customers.overrides`")) return;
                for_each_field(value, "`customers.overrides`", [&](const std::string &, const YAML::Node &id_node,
                                                                   const YAML::Node &limits) {
                    const std::string id = id_value(id_node, "customer id");
                    const std::string owner = "customer " + quoted(id);
                    policy_.customers.overrides[id] = parse_limits(limits, "limits of " + owner, owner);
                });
            } else {
                fail(key, "unknown field " + quoted(field) + " in `customers`");
            }
        });
    }

    void parse_orgs(const YAML::Node &orgs) {
        if (!expect_map_or_empty(orgs, "`orgs`")) return;
        for_each_field(orgs, "`orgs`", [&](const std::string &, const YAML::Node &name_node,
                                           const YAML::Node &body) {
            Org org;
            org.id = id_value(name_node, "org id");
            const std::string where = "org " + quoted(org.id);
            if (!body.IsNull()) {  // an org may stand without caps of its own
                if (!body.IsMap()) fail(body, where + " must be a mapping");
                int low_balance_line = 0;
                for_each_field(body, where, [&](const std::string &field, const YAML::Node &key,
                                                const YAML::Node &value) {
                    if (field == "limits") {
                        org.limits = parse_limits(value, where);
                    } else if (field == "plan") {
                        org.plan = string_value(value, "`plan` of " + where);
                        org_plan_lines_.emplace_back(org.id, line_of(value));
                    } else if (field == "created_at") {
                        std::int64_t when = 0;
                        if (!value.IsScalar() || !parse_rfc3339(value.Scalar(), when))
                            fail(value, "`created_at` of " + where +
                                            " must be an RFC 3339 time such as 2026-01-10T00:00:00Z");
                        org.created_at = when;
                    } else if (field == "prepaid") {
                        org.prepaid = bool_value(value, "`prepaid` of " + where);
                    } else if (field == "low_balance_usd") {
                        org.low_balance_usd = usd_amount(value, "`low_balance_usd` of " + where);
                        low_balance_line = line_of(key);
                    } else if (field == "timezone") {
                        org.timezone = string_value(value, "`timezone` of " + where);
                        if (!known_time_zone(org.timezone))
                            fail(value, "`timezone` of " + where + " is " + quoted(org.timezone) +
                                            ", which is not a time zone of the tz database (such as Europe/Berlin)");
                    } else {
                        fail(key, "unknown field " + quoted(field) + " in " + where);
                    }
                });
                // Without a balance there is nothing for the threshold to watch.
                if (org.low_balance_usd && !org.prepaid)
                    fail(low_balance_line, "`low_balance_usd` of " + where + " needs `prepaid: true`");
            }
            policy_.orgs[org.id] = std::move(org);
        });
    }

    void parse_projects(const YAML::Node &projects) {
        if (!expect_map_or_empty(projects, "`projects`")) return;
        for_each_field(projects, "`projects`", [&](const std::string &, const YAML::Node &name_node,
                                                   const YAML::Node &body) {
            Project project;
            project.id = id_value(name_node, "project id");
            const std::string where = "project " + quoted(project.id);
            if (!body.IsMap()) fail(body.IsNull() ? name_node : body, where + " must be a mapping with `org`");
            int org_line = 0;
            for_each_field(body, where, [&](const std::string &field, const YAML::Node &key,
                                            const YAML::Node &value) {
                if (field == "org") {
                    project.org = string_value(value, "`org` of " + where);
                    org_line = line_of(value);
                } else if (field == "limits") {
                    project.limits = parse_limits(value, where);
                } else {
                    fail(key, "unknown field " + quoted(field) + " in " + where);
                }
            });
            if (project.org.empty()) fail(name_node, where + " is missing `org`");
            project_org_lines_.emplace_back(project.id, org_line);
            policy_.projects[project.id] = std::move(project);
        });
    }

    void parse_keys(const YAML::Node &keys) {
        if (keys.IsNull()) return;
        if (!keys.IsSequence()) fail(keys, "`keys` must be a list");
        std::map<std::string, int> id_lines;
        std::map<std::string, std::pair<std::string, int>> hash_owners;  // sha256 -> (id, line)
        int index = 0;
        for (const YAML::Node &entry : keys) {
            ++index;
            if (!entry.IsMap()) fail(entry, "keys entry " + std::to_string(index) + " must be a mapping");

            // Name the key by its id in every message when it has one.
            const YAML::Node id_node = entry["id"];
            std::string where = "keys entry " + std::to_string(index);
            if (id_node.IsDefined() && id_node.IsScalar() && !id_node.Scalar().empty())
                where = "key " + quoted(id_node.Scalar());

            Key key;
            YAML::Node sha256_node, project_node;
            for_each_field(entry, where, [&](const std::string &field, const YAML::Node &name,
                                             const YAML::Node &value) {
                if (field == "id") {
                    key.id = id_value(value, "key id");
                } else if (field == "sha256") {
                    key.sha256 = sha256_value(value, "`sha256` of " + where);
                    sha256_node = value;
                } else if (field == "project") {
                    key.project = string_value(value, "`project` of " + where);
                    project_node = value;
                } else if (field == "limits") {
                    key.limits = parse_limits(value, where);
                } else if (field == "expires_at") {
                    std::int64_t when = 0;
                    if (!value.IsScalar() || !parse_rfc3339(value.Scalar(), when))
                        fail(value, "`expires_at` of " + where +
                                        " must be an RFC 3339 time such as 2027-01-01T00:00:00Z");
                    key.expires_at = when;
                } else if (field == "revoked") {
                    key.revoked = bool_value(value, "`revoked` of " + where);
                } else {
                    fail(name, "unknown field " + quoted(field) + " in " + where);
                }
            });

            if (key.id.empty()) fail(entry, where + " is missing `id`");
            if (key.sha256.empty()) fail(entry, where + " is missing `sha256`");
            if (key.project.empty()) fail(entry, where + " is missing `project`");

            auto [earlier_id, id_is_new] = id_lines.emplace(key.id, line_of(id_node));
            if (!id_is_new)
                fail(id_node, "duplicate key id " + quoted(key.id) + " (first at line " +
                                  std::to_string(earlier_id->second) + ")");
            auto [earlier_hash, hash_is_new] =
                hash_owners.emplace(key.sha256, std::make_pair(key.id, line_of(sha256_node)));
            if (!hash_is_new)
                fail(sha256_node, "key " + quoted(key.id) + " has the same sha256 as key " +
                                      quoted(earlier_hash->second.first) + " (line " +
                                      std::to_string(earlier_hash->second.second) + ")");

            key_project_lines_.emplace_back(key.sha256, line_of(project_node));
            policy_.keys_by_sha256.emplace(key.sha256, std::move(key));
        }
    }

    std::string sha256_value(const YAML::Node &node, const std::string &what) {
        std::string text = node.IsScalar() ? node.Scalar() : std::string();
        bool ok = text.size() == 64;
        for (char &c : text) {
            if (c >= 'A' && c <= 'F') c = static_cast<char>(c - 'A' + 'a');
            if (!((c >= '0' && c <= '9') || (c >= 'a' && c <= 'f'))) ok = false;
        }
        if (!ok) fail(node, what + " must be 64 hexadecimal characters (the SHA-256 of the secret)");
        return text;
    }

    std::string file_;
    Policy &policy_;
    int current_field_line_ = 0;  // line of the field whose value is being read
    std::vector<std::pair<std::string, int>> project_org_lines_;  // project id -> line of its `org`
    std::vector<std::pair<std::string, int>> key_project_lines_;  // key sha256 -> line of its `project`
    std::vector<std::pair<std::string, int>> org_plan_lines_;     // org id -> line of its `plan`
};

}  // namespace

std::shared_ptr<const Policy> parse_policy(const std::string &yaml_text, const std::string &file_name) {
    YAML::Node root;
    try {
        root = YAML::Load(yaml_text);
    } catch (const YAML::Exception &e) {
        throw PolicyError(file_name, line_of(e.mark), "invalid YAML: " + e.msg);
    }
    auto policy = std::make_shared<Policy>();
    policy->file = file_name;
    static std::atomic<std::uint64_t> generations{0};
    policy->generation = ++generations;
    try {
        PolicyParser(file_name, *policy).parse_document(root);
        for (const auto &entry : policy->keys_by_sha256) policy->keys_by_id.emplace(entry.second.id, &entry.second);
    } catch (const PolicyError &) {
        throw;
    } catch (const YAML::Exception &e) {  // a conversion the checks above did not foresee
        throw PolicyError(file_name, line_of(e.mark), e.msg);
    }
    return policy;
}

std::shared_ptr<const Policy> load_policy_file(const std::string &path) {
    std::string why_not;
    std::optional<std::string> text = read_text_file(path, "policy file", why_not);
    if (!text) throw PolicyError(path, 0, why_not);
    return parse_policy(*text, path);
}

}  // namespace spendcap
