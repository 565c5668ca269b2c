// Every Redis key spend-cap reads or writes, named in this one place (SPEC
// section 6; the README's Redis section says what each holds). An org's keys
// share the hash tag {ORG}, so that every script touches one slot; the global
// records (looked up before the org is known) live in slots of their own.
#pragma once

#include <string>

#include "base/periods.h"
#include "policy/policy.h"

namespace spendcap::keys {

// ---- global (each in its own slot)
std::string key_lookup(const std::string &sha256);   // sc:key:SHA256: which key a secret is
std::string key_id(const std::string &id);           // sc:keyid:ID: the org of API key ID
std::string project_index(const std::string &id);    // sc:project:ID: the org of API project ID
std::string api_orgs();                              // sc:orgs: the orgs the API created

// ---- an org's (all in the slot of its {ORG} tag)
std::string org_prefix(const std::string &org);      // sc:{ORG}:

// counters: spend | reqs | tokens, by scope, id and window ("d:DAY", "m:MONTH", "life")
enum class Measure { spend, requests, tokens };
std::string counter(const std::string &org, Measure measure, Scope scope, const std::string &id,
                    const std::string &window_suffix);
// per-minute rates: "rpm" | "tpm", MINUTE as Periods::minute
std::string rate(const std::string &org, Scope scope, const std::string &id, const char *rate, const std::string &minute);
std::string balance(const std::string &org);         // a prepaid org's balance (reservations drawn)
std::string held(const std::string &org);            // what requests in flight hold of it
std::string cleared(const std::string &org);         // cleared spend (plan ceilings read it)
std::string settlements(const std::string &org);     // how many requests have settled
std::string events(const std::string &org);          // the event stream

// the API's records and the org's config version
std::string config(const std::string &org);
std::string key_record(const std::string &org, const std::string &id);
std::string project_record(const std::string &org, const std::string &id);
std::string org_record(const std::string &org);
std::string customer_record(const std::string &org, const std::string &id);
std::string api_keys(const std::string &org);        // set of the org's API key ids
std::string api_projects(const std::string &org);    // set of its API project ids
std::string topup(const std::string &org, const std::string &idempotency_sha256);

// reservations: `reserved` holds per request its release lines, per batch
// "@BATCH" its request ids and "#BATCH" how many still hold; `deadlines`
// the batches by deadline; `settled`, `released` and `gone` the requests and
// batches that a late settlement or reserve must recognise (scored by when
// they may go)
std::string reserved(const std::string &org);
std::string deadlines(const std::string &org);
std::string settled(const std::string &org);
std::string released(const std::string &org);
std::string gone(const std::string &org);

// the markers that make each event fire once: a hash per window and period
// (its fields "warned:COUNTER:CAP:FRACTION", "reached:COUNTER:CAP"), expiring
// with that window's counters; low_balance until a top-up; key_expired per
// key and expiry
std::string markers(const std::string &org, const std::string &window_suffix);
std::string low_balance(const std::string &org);
std::string key_expired(const std::string &org, const std::string &key_id, std::int64_t expires_at);

// the layout before this one, which the sweeper still empties: batch
// records resv:BATCH (hashes) by sc:{ORG}:deadlines, and single requests
// resv:RID (strings) by sc:{ORG}:reservations, with released:RID markers
std::string legacy_batch_deadlines(const std::string &org);
std::string legacy_request_deadlines(const std::string &org);
std::string legacy_record(const std::string &org, const std::string &id);
std::string legacy_released(const std::string &org, const std::string &request_id);

}  // namespace spendcap::keys
