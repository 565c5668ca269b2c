// The management API's answers as JSON, built by hand in the documented field
// order (json/writer.h), every string escaped (invalid UTF-8, as an id from a
// path or a Redis field may hold, as U+FFFD).
#include "admin/render.h"

#include <algorithm>
#include <utility>

#include "json/writer.h"
#include "policy/limits_json.h"

namespace spendcap::admin {

using json::json_array;
using json::ObjectWriter;

namespace {

Nanos remaining_of(Nanos cap, Nanos spent) { return std::max<Nanos>(saturating_sub(cap, spent), 0); }

std::string key_object(const KeyView &key, const std::string &secret) {
    ObjectWriter object;
    object.string("id", key.id)
        .string_or_null("name", key.name)
        .string("project", key.project)
        .string("org", key.org)
        .raw("limits", limits_json(key.limits))
        .time("expires_at", key.expires_at)
        .boolean("revoked", key.revoked)
        .time("created_at", key.created_at)
        .string("source", key.from_file ? "file" : "api");
    if (!secret.empty()) object.string("secret", secret);
    return object.done();
}

std::string window_object(const WindowUsage &w) {
    const bool lifetime = w.window == Window::lifetime;
    ObjectWriter object;
    object.string("window", window_name(w.window));
    if (lifetime)
        object.null("period").null("reset_at");
    else
        object.string_or_null("period", w.period).reset_time("reset_at", w.reset_at);
    object.amount("spent", w.spent)
        .amount("cap", w.cap)
        .amount("remaining", w.cap ? std::optional<Nanos>(remaining_of(*w.cap, w.spent)) : std::nullopt)
        // No lifetime counter of requests or tokens is kept (SPEC section 6): null, not 0.
        .integer("requests", lifetime ? std::nullopt : std::optional<std::int64_t>(w.requests))
        .integer("requests_cap", lifetime ? std::nullopt : w.requests_cap)
        .integer("tokens", lifetime ? std::nullopt : std::optional<std::int64_t>(w.tokens))
        .integer("tokens_cap", lifetime ? std::nullopt : w.tokens_cap)
        .time("forecast_exhausted_at", w.forecast);
    return object.done();
}

std::string rate_object(const RateUsage &rate) {
    if (!rate.cap) return "null";
    return ObjectWriter()
        .integer("used", rate.used)
        .integer("cap", *rate.cap)
        .reset_time("reset_at", rate.reset_at)
        .done();
}

}  // namespace

std::string render_error(const ApiError &e) {
    const std::string inner = ObjectWriter().string("code", e.code).string("message", e.message).done();
    return ObjectWriter().raw("error", inner).done();
}

std::string render_key(const KeyView &key, const std::string &secret) { return key_object(key, secret); }

std::string render_keys(const std::vector<KeyView> &keys) {
    std::vector<std::string> objects;
    objects.reserve(keys.size());
    for (const KeyView &key : keys) objects.push_back(key_object(key, ""));
    return ObjectWriter().raw("keys", json_array(objects)).done();
}

std::string render_project(const ProjectView &project) {
    return ObjectWriter()
        .string("id", project.id)
        .string("org", project.org)
        .raw("limits", limits_json(project.limits))
        .string("source", project.from_file ? "file" : "api")
        .done();
}

std::string render_org(const OrgView &org) {
    return ObjectWriter()
        .string("id", org.id)
        .string_or_null("plan", org.plan)
        .time("created_at", org.created_at)
        .boolean("prepaid", org.prepaid)
        .amount("low_balance", org.low_balance_usd)
        .string("timezone", org.timezone.empty() ? "UTC" : org.timezone)
        .raw("limits", limits_json(org.limits))
        .amount("cleared", org.cleared)
        .string("source", org.from_file ? "file" : "api")
        .done();
}

namespace {

std::string windows_array(const std::vector<WindowUsage> &windows) {
    std::vector<std::string> objects;
    objects.reserve(windows.size());
    for (const WindowUsage &w : windows) objects.push_back(window_object(w));
    return json_array(objects);
}

std::string rates_object(const RateUsage &rpm, const RateUsage &tpm) {
    return ObjectWriter().raw("rpm", rate_object(rpm)).raw("tpm", rate_object(tpm)).done();
}

}  // namespace

std::string render_usage(const UsageView &usage) {
    ObjectWriter object;
    object.string("scope", scope_name(usage.scope))
        .string("id", usage.id)
        .string("org", usage.org)
        .raw("windows", windows_array(usage.windows))
        .raw("rates", rates_object(usage.rpm, usage.tpm));
    if (!usage.models.empty()) {
        std::vector<std::string> models;
        for (const ModelUsage &m : usage.models)
            models.push_back(ObjectWriter()
                                 .string("model", m.model)
                                 .raw("windows", windows_array(m.windows))
                                 .raw("rates", rates_object(m.rpm, m.tpm))
                                 .done());
        object.raw("models", json_array(models));
    }
    return object.done();
}

namespace {

std::string layer_object(const Layer &layer, bool binding) {
    return ObjectWriter()
        .string("scope", scope_name(layer.scope))
        .string("id", layer.id)
        .string("window", layer.window)
        .amount("cap", layer.cap)
        .amount("spent", layer.spent)
        .amount("remaining", layer.remaining)
        .reset_time("reset_at", layer.reset_at)
        .time("forecast_exhausted_at", layer.forecast)
        .string_or_null("model", layer.model)
        .boolean("binding", binding)
        .done();
}

}  // namespace

std::string render_budgets(const std::string &key_id, const std::vector<Layer> &layers) {
    std::size_t binding = layers.size();  // the first with the least remaining that every request meets
    for (std::size_t i = 0; i < layers.size(); ++i)
        if (layers[i].model.empty() && (binding == layers.size() || layers[i].remaining < layers[binding].remaining))
            binding = i;
    std::vector<std::string> objects;
    objects.reserve(layers.size());
    for (std::size_t i = 0; i < layers.size(); ++i) objects.push_back(layer_object(layers[i], i == binding));
    return ObjectWriter().string("key", key_id).raw("budgets", json_array(objects)).done();
}


std::string render_check(const CheckView &check) {
    ObjectWriter object;
    object.boolean("allowed", check.allowed)
        .integer("status", check.status)
        .string_or_null("code", check.code);
    if (check.scope)
        object.string("scope", scope_name(*check.scope));
    else
        object.null("scope");
    object.string_or_null("window", check.window)
        .string_or_null("model", check.model)
        .string_or_null("message", check.message)
        .amount("estimate", check.estimate)
        .integer("estimate_tokens", check.estimate_tokens);
    if (check.binding)
        object.raw("binding", layer_object(*check.binding, true));
    else
        object.null("binding");
    return object.done();
}

std::string render_balance(const BalanceView &b) {
    return ObjectWriter()
        .string("org", b.org)
        .amount("balance", b.balance)
        .amount("reserved", b.reserved)
        .amount("available", saturating_sub(b.balance, b.reserved))
        .amount("low_balance", b.low_balance)
        .done();
}

std::string render_topup(const std::string &org, const Topup &topup, Nanos balance_after, bool applied) {
    return ObjectWriter()
        .string("org", org)
        .string("idempotency_key", topup.idempotency_key)
        .amount("amount", topup.amount)
        .amount("balance", balance_after)
        .boolean("applied", applied)
        .done();
}

// An event field whose name is already taken in its object (the stream
// entry's own "id": a warning event's `id` names the capped scope) is written
// as "data_" + name, as the webhook body keeps fields under "data".
std::string render_events(const std::vector<Event> &events, const std::string &after) {
    std::vector<std::string> objects;
    objects.reserve(events.size());
    for (const Event &event : events) {
        ObjectWriter object;
        object.string("id", event.id);
        std::vector<std::string> taken{"id"};
        for (const auto &[name, value] : event.fields) {
            std::string written = name;
            while (std::find(taken.begin(), taken.end(), written) != taken.end()) written = "data_" + written;
            object.string(written, value);
            taken.push_back(std::move(written));
        }
        objects.push_back(object.done());
    }
    ObjectWriter answer;
    answer.raw("events", json_array(objects));
    if (!events.empty())
        answer.string("next", events.back().id);
    else
        answer.string_or_null("next", after);
    return answer.done();
}

}  // namespace spendcap::admin
