#pragma once
// The JSON form of the status API (docs/api.md): encoders used by mvmd's API server, decoders
// used by mvmctl, so both sides share one definition of every field.
//
// Promises:
//  - Field names are lowerCamelCase and stable within /v1; new fields may be added, none renamed.
//  - Encoders are pure functions of their input: equal inputs give equal JSON, so the watch
//    stream can diff objects by comparing their encodings.
//  - Decode(Encode(x)) gives back x for every field the API carries (VmmHandle::data, which is
//    driver-private, is never sent). Decoders are lenient: a missing or mistyped field takes
//    its default, so an older mvmctl reads a newer mvmd's answers.
//  - Times are integers in milliseconds since the Unix epoch (fields ending in `Ms`).

#include <json/value.h>

#include <string>
#include <vector>

#include "controller/model.h"
#include "controller/status.h"
#include "manifests/object.h"

namespace mvm::controller::api {

// --- Encoders -----------------------------------------------------------------------------

// {"type","status":"True"|"False","reason","message","observedGeneration","lastTransitionMs"}
Json::Value EncodeCondition(const Condition& condition);
// {"objectKind","objectKey","type":"Normal"|"Warning","reason","message","from","firstMs",
//  "lastMs","count"}
Json::Value EncodeEvent(const Event& event);
// The `spec` of a Pool manifest: same field names as schemas/pool.schema.json.
Json::Value EncodePoolSpec(const manifests::PoolSpec& spec);
// {"kind":"Pool","tenant","name","generation","observedGeneration","specHash","desired",
//  "current","ready","instances","pruning","conditions","firstSeenMs"}
Json::Value EncodePoolStatus(const PoolStatus& status);
// {"kind":"Instance","tenant","name","pool","state","target","specHash","generation","vmm",
//  "createdAtMs","stateSinceMs","updatedAtMs","failures","lastError","failed","pending","spec"}
Json::Value EncodeInstance(const Instance& instance);
// {"kind":"Tenant","name","usage","quota","pools","instances","firstSeenMs"}; `quota` holds only
// the limits the manifest sets (absent = unlimited).
Json::Value EncodeTenantStatus(const TenantStatus& status, const manifests::TenantQuota& quota);
Json::Value EncodeQuota(const manifests::TenantQuota& quota);
// {"file","line","column"}
Json::Value EncodeSource(const manifests::Source& source);

// One line of compact JSON, without the trailing newline.
std::string WriteCompact(const Json::Value& value);
// Indented with two spaces, for people.
std::string WritePretty(const Json::Value& value);
// Parses `text` as one JSON value; false (and `error` set) when it is not.
bool ParseJson(const std::string& text, Json::Value& out, std::string* error = nullptr);

// --- Decoders (mvmctl) --------------------------------------------------------------------

struct TenantInfo {
  TenantStatus status;
  manifests::TenantQuota quota;
};

// What GET /v1/pools/{tenant}/{name} answers.
struct PoolDetail {
  PoolStatus status;
  Json::Value manifest;  // null when the pool has left the manifests
  manifests::Source source;
  std::vector<Event> events;
};

// What GET /v1/instances/{tenant}/{name} answers.
struct InstanceDetail {
  Instance instance;
  std::vector<Event> events;
};

// What GET /v1/tenants/{name} answers.
struct TenantDetail {
  TenantInfo tenant;
  Json::Value manifest;  // null when the tenant has left the manifests
  manifests::Source source;
  std::vector<Event> events;
};

Condition DecodeCondition(const Json::Value& json);
Event DecodeEvent(const Json::Value& json);
manifests::PoolSpec DecodePoolSpec(const Json::Value& json);
PoolStatus DecodePoolStatus(const Json::Value& json);
Instance DecodeInstance(const Json::Value& json);
TenantInfo DecodeTenant(const Json::Value& json);
manifests::TenantQuota DecodeQuota(const Json::Value& json);
manifests::Source DecodeSource(const Json::Value& json);
PoolDetail DecodePoolDetail(const Json::Value& json);
InstanceDetail DecodeInstanceDetail(const Json::Value& json);
TenantDetail DecodeTenantDetail(const Json::Value& json);

}  // namespace mvm::controller::api
