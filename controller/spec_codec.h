#pragma once
// Spec codec: manifests::PoolSpec <-> JSON, the form the store keeps specs in (specs.json).
//
// Promises:
//  - Round trip is exact: PoolSpecFromJson(PoolSpecToJson(s)) equals s field by field, for every
//    value a PoolSpec can hold (64-bit integers, empty strings, an absent vs. an empty initrd).
//  - The JSON uses the manifest's field names and shape (spec.image.kernel, spec.replicas.warm…),
//    so a stored spec reads like the Pool manifest it came from; initrd absent is `null`.
//  - PoolSpecFromJson accepts a missing member as the PoolSpec default (specs written before a
//    field existed still load) and rejects a member of the wrong type or an unknown enum name
//    with an error naming the field path, e.g. `spec.resources.vcpus: expected an integer`.

#include <json/value.h>

#include "common/result.h"
#include "manifests/object.h"

namespace mvm::controller {

Json::Value PoolSpecToJson(const manifests::PoolSpec& spec);
Result<manifests::PoolSpec> PoolSpecFromJson(const Json::Value& json);

}  // namespace mvm::controller
