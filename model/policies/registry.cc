// MakePolicy: policy name -> factory (one line per built-in policy below; RegisterPolicy adds
// more).
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

// The built-in policies: one line each, the schema's name (core/policy_spec.cc) and the factory
// its file in model/policies/ defines.
#define KVGRID_BUILTIN_POLICIES(X)                     \
  X("full", NewFullPolicy)                             \
  X("window", NewWindowPolicy)                         \
  X("streaming_llm", NewStreamingLlmPolicy)            \
  X("h2o", NewH2oPolicy)                               \
  X("snapkv", NewSnapKvPolicy)                         \
  X("pyramidkv", NewPyramidKvPolicy)                   \
  X("knorm", NewKnormPolicy)                           \
  X("tova", NewTovaPolicy)                             \
  X("random", NewRandomPolicy)                         \
  X("observed_attention", NewObservedAttentionPolicy)  \
  X("keydiff", NewKeyDiffPolicy)                       \
  X("expected_attention", NewExpectedAttentionPolicy)  \
  X("chunkkv", NewChunkKvPolicy)                       \
  X("adakv", NewAdaKvPolicy)

namespace kvgrid {
namespace policies {
#define KVGRID_DECLARE_FACTORY(name, factory) std::unique_ptr<KvPolicy> factory(const PolicySpec& spec);
KVGRID_BUILTIN_POLICIES(KVGRID_DECLARE_FACTORY)
#undef KVGRID_DECLARE_FACTORY
}  // namespace policies

namespace {

std::map<std::string, PolicyFactory>& Factories() {
#define KVGRID_FACTORY_ENTRY(name, factory) {name, &policies::factory},
  static auto* factories =
      new std::map<std::string, PolicyFactory>{KVGRID_BUILTIN_POLICIES(KVGRID_FACTORY_ENTRY)};
#undef KVGRID_FACTORY_ENTRY
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
