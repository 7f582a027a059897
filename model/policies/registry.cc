// MakePolicy: policy name -> factory (one line per built-in policy; RegisterPolicy adds more).
// The spec is re-validated against its schema (core/policy_spec.cc), so hand-built specs get the
// same errors and defaults as parsed ones.
#include <map>
#include <string>

#include "absl/strings/str_cat.h"
#include "common/status_macros.h"
#include "model/engine/kv_policy.h"
#include "model/policies/policies.h"
#include "model/policies/registry.h"
#include "model/policies/selection.h"

namespace kvgrid {
namespace {

std::map<std::string, PolicyFactory>& Factories() {
  static auto* factories = new std::map<std::string, PolicyFactory>{
      {"full", &policies::NewFullPolicy},
      {"window", &policies::NewWindowPolicy},
      {"streaming_llm", &policies::NewStreamingLlmPolicy},
      {"h2o", &policies::NewH2oPolicy},
      {"snapkv", &policies::NewSnapKvPolicy},
      {"pyramidkv", &policies::NewPyramidKvPolicy},
      {"knorm", &policies::NewKnormPolicy},
      {"tova", &policies::NewTovaPolicy},
      {"random", &policies::NewRandomPolicy},
      {"observed_attention", &policies::NewObservedAttentionPolicy},
      {"keydiff", &policies::NewKeyDiffPolicy},
      {"expected_attention", &policies::NewExpectedAttentionPolicy},
      {"chunkkv", &policies::NewChunkKvPolicy},
  };
  return *factories;
}

}  // namespace

namespace policies {

std::unique_ptr<ScorerPolicy> NewInnerScorer(const PolicySpec& wrapper) {
  absl::StatusOr<PolicySpec> spec = InnerScorerSpec(wrapper);
  TORCH_CHECK(spec.ok(), "policy '", wrapper.name, "': inner scorer: ", spec.status().ToString());
  auto it = Factories().find(spec->name);
  TORCH_CHECK(it != Factories().end(), "policy '", wrapper.name, "': no scorer '", spec->name, "'");
  std::unique_ptr<KvPolicy> policy = it->second(*spec);
  auto* scorer = dynamic_cast<ScorerPolicy*>(policy.get());
  TORCH_CHECK(scorer != nullptr, "policy '", wrapper.name, "': '", spec->name, "' is not a scorer");
  policy.release();
  return std::unique_ptr<ScorerPolicy>(scorer);
}

}  // namespace policies

absl::Status RegisterPolicy(PolicySchema schema, PolicyFactory factory) {
  if (!factory) return absl::InvalidArgumentError(absl::StrCat("policy '", schema.name, "': no factory"));
  if (Factories().count(schema.name)) {
    return absl::AlreadyExistsError(absl::StrCat("policy '", schema.name, "' is already registered"));
  }
  const std::string name = schema.name;
  RETURN_IF_ERROR(RegisterPolicySchema(std::move(schema)));
  Factories()[name] = std::move(factory);
  return absl::OkStatus();
}

absl::StatusOr<std::unique_ptr<KvPolicy>> MakePolicy(const PolicySpec& spec) {
  std::map<std::string, std::string> raw;
  for (const auto& [key, value] : spec.params) raw[key] = FormatPolicyValue(value);
  ASSIGN_OR_RETURN(PolicySpec valid, MakePolicySpec(spec.name, raw));
  auto it = Factories().find(valid.name);
  if (it == Factories().end()) {
    return absl::UnimplementedError(
        absl::StrCat("policy '", valid.name, "' has a schema but no implementation"));
  }
  return it->second(valid);
}

}  // namespace kvgrid
