// Conversions between the wire records (proto/kvgrid.proto) and the C++ contracts
// (core/run_result.h). Header-only dependencies: no torch, no SQLite.
#pragma once

#include "proto/kvgrid.pb.h"
#include "core/run_result.h"

namespace kvgrid {

void ToProto(const RunResult& result, v1::ResultRecord* out);
// environment_json that does not parse is kept as {"unparsed": "<text>"}.
RunResult FromProto(const v1::ResultRecord& record);

}  // namespace kvgrid
