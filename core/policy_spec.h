// KV policy specifications: "name" or "name:key=value,key=value" (lists as [a,b] or a;b).
// Parsing, validation against each policy's parameter schema, defaults and the canonical form
// live here, without torch, so the grid parser (coordinator/) validates at submit time with the
// same rules the engine applies. The engine side (model/policies/) builds policies from these.
#pragma once

#include <cstdint>
#include <deque>
#include <functional>
#include <map>
#include <optional>
#include <string>
#include <string_view>
#include <variant>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "core/kv_dtype.h"

namespace kvgrid {

// A parameter value: integer, real, string (enum) or list of integers.
using PolicyValue = std::variant<int64_t, double, std::string, std::vector<int64_t>>;

struct PolicySpec {
  std::string name;
  std::map<std::string, PolicyValue> params;  // validated, defaults filled in

  // Canonical text form: name:key=value,... with keys sorted and every default present.
  std::string ToString() const;

  bool Has(const std::string& key) const { return params.count(key) > 0; }
  int64_t Int(const std::string& key, int64_t fallback = 0) const;
  double Real(const std::string& key, double fallback = 0) const;
  std::string Str(const std::string& key, const std::string& fallback = "") const;
  std::vector<int64_t> IntList(const std::string& key) const;
};

enum class ParamType { kInt, kReal, kEnum, kIntList };

struct ParamSchema {
  std::string key;
  ParamType type;
  std::string help;
  bool required = false;
  std::string default_value;              // textual default ("" = none)
  double min = -1e300, max = 1e300;       // inclusive numeric range (kReal: see min_exclusive)
  bool min_exclusive = false;
  std::vector<std::string> choices;       // kEnum
};

struct PolicySpec;

// How a policy's parameters set the tokens it keeps per head and layer: the one rule behind the
// report's budget axis (reports/) and the benchmarks' specs at a budget (bench/).
struct BudgetRule {
  std::vector<std::string> keys;  // the parameters that set it (reports label rows by the others)
  // Tokens `spec` keeps when it compresses `tokens` tokens (a ratio needs them); nullopt when the
  // policy keeps everything or the budget depends on a length not given.
  std::function<std::optional<double>(const PolicySpec& spec, std::optional<double> tokens)> kept;
  // "key=value,..." that keeps `budget` tokens; empty for a policy without one (full).
  std::function<std::string(int64_t budget)> at_budget;
};

struct PolicySchema {
  std::string name;
  std::string summary;
  std::vector<ParamSchema> params;
  BudgetRule budget;
  // Its heads keep different numbers of entries (adakv): the policy's KeepsUnevenHeads() stated
  // torch-free for the grid (tests/policies/policies_test.cc checks the two agree).
  bool uneven_heads = false;
};

// Budget rules for a schema. A token count `key` (plus a fixed part `fixed_key`, defaulting to
// `fixed_default`, e.g. streaming_llm's sinks):
BudgetRule CountBudget(std::string key, std::string fixed_key = "", int64_t fixed_default = 0);
// A token count `count_key`, or else a fraction `ratio_key` of the compressed tokens, rounded
// down (kvpress) or up:
BudgetRule CountOrRatioBudget(std::string count_key, std::string ratio_key, bool round_up = false);

// Every policy kvgrid knows, with its parameters (the registry's single source of truth): the
// built-in ones below, then those added with RegisterPolicySchema. References stay valid.
const std::deque<PolicySchema>& AllPolicySchemas();
const PolicySchema* FindPolicySchema(std::string_view name);

// Adds a policy's schema (model/policies/registry.h RegisterPolicy adds its factory with it).
// Refused: an empty or taken name, a parameter declared twice, a budget rule that is incomplete
// or names an undeclared parameter. Call at start-up, before specs are parsed on other threads.
absl::Status RegisterPolicySchema(PolicySchema schema);

// True for the kvpress-style scorers (they have an `interval` parameter) when `interval` is 0:
// they compress once at prefill and never while decoding, so a token-by-token (streaming)
// protocol needs their decoding variant, interval=N.
bool CompressesOnlyAtPrefill(const PolicySpec& spec);

// Why `spec` cannot act in perplexity protocol `protocol`, or "" when it can: `sliding` keeps
// no cache (only `full` runs it); `streaming` needs the prefill-only scorers' decoding variant.
// The one rule behind both the grid expander (which leaves such points out) and the workload
// (which refuses them).
std::string WhyPolicyCannotRunProtocol(const PolicySpec& spec, const std::string& protocol);

// Why `spec` cannot run over a cache stored as `kv`, or "": a quantised cache holds no holes,
// so a policy whose heads keep uneven counts cannot use it (the engine refuses it too).
std::string WhyPolicyCannotUseKvDtype(const PolicySpec& spec, const KvDtype& kv);

// A parameter value as text: integers as they are, lists as [a,b], doubles with `double_digits`
// significant digits (6 in canonical names and messages; 17 round-trips a double exactly).
std::string FormatPolicyValue(const PolicyValue& v, int double_digits = 6);

// The spec of a wrapper's inner scorer (chunkkv's `inner`): that scorer's defaults with the
// wrapper's budget, ratio and interval.
absl::StatusOr<PolicySpec> InnerScorerSpec(const PolicySpec& wrapper);

// The schema's BudgetRule: tokens `spec` keeps per head and layer when it compresses
// `compressed_tokens` tokens; nullopt for `full`, an unknown policy, or a ratio without a length.
std::optional<double> KeptTokens(const PolicySpec& spec, std::optional<double> compressed_tokens);

// "name:key=value,..." of policy `name` keeping `budget` tokens (its schema's
// BudgetRule::at_budget; the other parameters left at their defaults), validated. Errors: unknown
// policy, a policy without a budget, a budget the policy cannot keep.
absl::StatusOr<std::string> PolicyTextAtBudget(const std::string& name, int64_t budget);

// Parses and validates "name:key=value,...". Errors name the policy, the key and the rule.
absl::StatusOr<PolicySpec> ParsePolicySpec(std::string_view text);

// Validates a spec given as name + textual key/value pairs (used by the YAML grid parser).
absl::StatusOr<PolicySpec> MakePolicySpec(const std::string& name,
                                          const std::map<std::string, std::string>& raw_params);

}  // namespace kvgrid
