#include "core/policy_spec.h"

#include <algorithm>
#include <cerrno>
#include <cmath>
#include <cstdlib>
#include <set>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "absl/strings/str_join.h"
#include "absl/strings/str_split.h"
#include "absl/strings/strip.h"
#include "common/status_macros.h"

namespace kvgrid {
namespace {

ParamSchema Int(std::string key, std::string help, std::string def = "", double min = 0,
                double max = 1e12, bool required = false) {
  ParamSchema p{std::move(key), ParamType::kInt, std::move(help)};
  p.default_value = std::move(def);
  p.min = min;
  p.max = max;
  p.required = required;
  return p;
}
ParamSchema Ratio(std::string key, std::string help, std::string def = "") {
  ParamSchema p{std::move(key), ParamType::kReal, std::move(help)};
  p.default_value = std::move(def);
  p.min = 0;
  p.min_exclusive = true;
  p.max = 1;
  return p;
}
ParamSchema Enum(std::string key, std::string help, std::vector<std::string> choices,
                 std::string def) {
  ParamSchema p{std::move(key), ParamType::kEnum, std::move(help)};
  p.choices = std::move(choices);
  p.default_value = std::move(def);
  return p;
}
ParamSchema IntList(std::string key, std::string help) {
  ParamSchema p{std::move(key), ParamType::kIntList, std::move(help)};
  p.min = 0;
  p.max = 1e6;
  return p;
}

// Budget knobs shared by the prefill scorers: an absolute token count or a keep ratio.
std::vector<ParamSchema> BudgetParams() {
  return {Int("budget", "tokens kept per head per layer (absolute)", "", 1),
          Ratio("ratio", "fraction of the tokens kept, in (0,1]; kept = floor(n*ratio)"),
          Int("interval", "decoding variant (streaming protocol): compress every N steps", "0", 0)};
}

// h2o: heavy + recent tokens, or the two fractions of the prompt; at a budget, half and half.
BudgetRule HeavyPlusRecent() {
  BudgetRule r;
  r.keys = {"heavy", "recent", "heavy_ratio", "recent_ratio"};
  r.kept = [](const PolicySpec& s, std::optional<double> tokens) -> std::optional<double> {
    if (s.Has("heavy") || s.Has("recent")) return static_cast<double>(s.Int("heavy") + s.Int("recent"));
    if (!tokens) return std::nullopt;
    return std::floor((s.Real("heavy_ratio") + s.Real("recent_ratio")) * *tokens);
  };
  r.at_budget = [](int64_t b) { return absl::StrCat("heavy=", b / 2, ",recent=", b - b / 2); };
  return r;
}

// Scorers a wrapper (chunkkv) may rank with: the kvpress-style ScorerPolicy subclasses.
std::vector<std::string> InnerScorers() {
  return {"snapkv", "observed_attention", "keydiff", "expected_attention", "random"};
}

BudgetRule NoBudget() {
  BudgetRule r;
  r.kept = [](const PolicySpec&, std::optional<double>) { return std::optional<double>(); };
  r.at_budget = [](int64_t) { return std::string(); };
  return r;
}

std::vector<PolicySchema> BuildSchemas() {
  std::vector<PolicySchema> s;
  s.push_back({"full", "baseline: never evict", {}, NoBudget()});
  s.push_back({"window", "recent tokens only, no sinks (StreamingLLM with 0 sinks)",
               {Int("window", "recent tokens kept", "", 1, 1e12, true)}, CountBudget("window")});
  s.push_back({"streaming_llm", "attention sinks + recent window (Xiao et al. 2023)",
               {Int("sink_tokens", "first tokens always kept", "4", 0),
                Int("window", "recent tokens kept", "", 1, 1e12, true)},
               CountBudget("window", "sink_tokens", 4)});
  s.push_back({"h2o", "heavy hitters (accumulated attention) + recent window, every step",
               {Int("heavy", "heavy-hitter tokens kept (absolute)", "", 0),
                Int("recent", "recent tokens kept (absolute)", "", 0),
                Ratio("heavy_ratio", "heavy budget as a fraction of the prompt length"),
                Ratio("recent_ratio", "recent budget as a fraction of the prompt length")},
               HeavyPlusRecent()});
  {
    PolicySchema p{"snapkv", "observation-window attention, pooled, once at prefill", BudgetParams(),
                   CountOrRatioBudget("budget", "ratio")};
    p.params.push_back(Int("window", "observation window (last prompt tokens)", "32", 1));
    p.params.push_back(Int("kernel", "pooling kernel (odd)", "7", 1, 63));
    p.params.push_back(Enum("pooling", "pooling over the key axis", {"max", "avg"}, "max"));
    s.push_back(p);
    PolicySchema py = p;
    py.name = "pyramidkv";
    py.summary = "SnapKV scores with per-layer budgets decreasing with depth";
    py.params.push_back(Int("beta", "pyramid steepness", "20", 1));
    s.push_back(py);
  }
  {
    PolicySchema p{"knorm", "keep the lowest key L2 norms (Devoto et al. 2024)", {},
                   CountOrRatioBudget("budget", "keep_ratio", /*round_up=*/true)};
    p.params.push_back(Ratio("keep_ratio", "fraction kept when pruning: ceil(keep_ratio*n)"));
    p.params.push_back(Int("budget", "tokens kept per head (absolute)", "", 1));
    p.params.push_back(Int("prune_after", "prune only once a layer holds this many tokens", "0", 0));
    p.params.push_back(IntList("skip_layers", "layer indices never pruned"));
    s.push_back(p);
  }
  s.push_back({"tova", "last query's head-averaged attention, every step (Oren et al. 2024)",
               {Int("cache_size", "tokens kept per layer", "", 1, 1e12, true)}, CountBudget("cache_size")});
  {
    PolicySchema p{"random", "uniformly random tokens (seeded control)", BudgetParams(),
                   CountOrRatioBudget("budget", "ratio")};
    p.params.push_back(Int("seed", "random seed", "0", 0));
    s.push_back(p);
  }
  s.push_back({"observed_attention", "mean attention received from the prompt queries (kvpress)",
               BudgetParams(), CountOrRatioBudget("budget", "ratio")});
  s.push_back({"keydiff", "keys least similar to the mean key direction (kvpress KeyDiff)",
               BudgetParams(), CountOrRatioBudget("budget", "ratio")});
  {
    PolicySchema p{"expected_attention",
                   "attention expected from future queries x value norm (kvpress Expected Attention)",
                   BudgetParams(), CountOrRatioBudget("budget", "ratio")};
    p.params.push_back(Int("n_future_positions", "future positions the query rotation averages", "512", 1));
    p.params.push_back(Int("n_sink", "first tokens always kept (their queries left out)", "4", 0));
    p.params.push_back(Enum("use_covariance", "add the queries' covariance term", {"true", "false"}, "true"));
    p.params.push_back(Enum("use_vnorm", "weight by the value norm", {"true", "false"}, "true"));
    ParamSchema eps{"epsilon", ParamType::kReal, "added to the expected attention before the value norm"};
    eps.default_value = "0";
    eps.min = 0;
    p.params.push_back(eps);
    s.push_back(p);
  }
  {
    PolicySchema p{"chunkkv", "whole chunks of consecutive tokens ranked by an inner scorer (kvpress ChunkKV)",
                   BudgetParams(), CountOrRatioBudget("budget", "ratio")};
    p.params.push_back(Enum("inner", "scorer ranking the tokens (its other parameters at their defaults)",
                            InnerScorers(), "snapkv"));
    p.params.push_back(Int("chunk_length", "tokens per chunk", "20", 1));
    s.push_back(p);
  }
  {
    // No decoding variant (interval 0 only): kvpress's DecodingPress(AdaKV) re-scores masked
    // slots and is not reproducible on a cache with holes (kv-policies-next.md §1).
    PolicySchema p{"adakv", "head-adaptive budgets: global top-k over a layer's heads with a per-head minimum (kvpress AdaKV)",
                   BudgetParams(), CountOrRatioBudget("budget", "ratio")};
    p.params[2] = Int("interval", "no decoding variant: compresses at prefill only", "0", 0, 0);
    p.params.push_back(Enum("inner", "scorer ranking the tokens (its other parameters at their defaults)",
                            InnerScorers(), "snapkv"));
    ParamSchema alpha{"alpha", ParamType::kReal, "safeguard: each head keeps at least int(budget*alpha) (>= 1) of its best tokens"};
    alpha.default_value = "0.2";
    alpha.min = 0;
    alpha.max = 1;
    p.params.push_back(alpha);
    p.uneven_heads = true;
    s.push_back(p);
  }
  return s;
}

absl::StatusOr<double> ParseNumber(const std::string& policy, const ParamSchema& p,
                                   const std::string& text) {
  const char* begin = text.c_str();
  char* end = nullptr;
  errno = 0;
  double value = std::strtod(begin, &end);
  if (text.empty() || end == begin || *end != '\0' || errno != 0 || !std::isfinite(value)) {
    return absl::InvalidArgumentError(absl::StrFormat(
        "policy '%s': parameter '%s' must be a number, got '%s' (%s)", policy, p.key, text, p.help));
  }
  return value;
}

absl::Status CheckRange(const std::string& policy, const ParamSchema& p, double v) {
  bool low_ok = p.min_exclusive ? v > p.min : v >= p.min;
  if (!low_ok || v > p.max) {
    std::string range = p.type == ParamType::kReal
                            ? absl::StrFormat("%s%g, %g]", p.min_exclusive ? "(" : "[", p.min, p.max)
                            : absl::StrFormat("an integer >= %g", p.min);
    return absl::InvalidArgumentError(absl::StrFormat(
        "policy '%s': parameter '%s' = %g is out of range; expected %s (%s)", policy, p.key, v,
        range, p.help));
  }
  return absl::OkStatus();
}

absl::StatusOr<PolicyValue> ParseValue(const std::string& policy, const ParamSchema& p,
                                       const std::string& raw) {
  std::string text(absl::StripAsciiWhitespace(raw));
  switch (p.type) {
    case ParamType::kInt: {
      ASSIGN_OR_RETURN(double v, ParseNumber(policy, p, text));
      if (v != std::floor(v)) {
        return absl::InvalidArgumentError(absl::StrFormat(
            "policy '%s': parameter '%s' must be an integer, got '%s'", policy, p.key, text));
      }
      RETURN_IF_ERROR(CheckRange(policy, p, v));
      return PolicyValue(static_cast<int64_t>(v));
    }
    case ParamType::kReal: {
      ASSIGN_OR_RETURN(double v, ParseNumber(policy, p, text));
      // A real keeps the significant digits of its canonical text, so a spec and the text that
      // names it (stored, hashed into the run key, sent to workers) are the same value.
      v = std::strtod(FormatPolicyValue(PolicyValue(v)).c_str(), nullptr);
      RETURN_IF_ERROR(CheckRange(policy, p, v));
      return PolicyValue(v);
    }
    case ParamType::kEnum: {
      if (std::find(p.choices.begin(), p.choices.end(), text) == p.choices.end()) {
        return absl::InvalidArgumentError(
            absl::StrFormat("policy '%s': parameter '%s' must be one of {%s}, got '%s'", policy,
                            p.key, absl::StrJoin(p.choices, ", "), text));
      }
      return PolicyValue(text);
    }
    case ParamType::kIntList: {
      absl::string_view inner = text;
      if (absl::ConsumePrefix(&inner, "[")) {
        if (!absl::ConsumeSuffix(&inner, "]")) {
          return absl::InvalidArgumentError(absl::StrFormat(
              "policy '%s': parameter '%s': unterminated list '%s'", policy, p.key, text));
        }
      }
      std::vector<int64_t> out;
      for (absl::string_view part : absl::StrSplit(inner, absl::ByAnyChar(",;"), absl::SkipWhitespace())) {
        ParamSchema element = p;
        element.type = ParamType::kInt;
        ASSIGN_OR_RETURN(PolicyValue v, ParseValue(policy, element, std::string(part)));
        out.push_back(std::get<int64_t>(v));
      }
      std::sort(out.begin(), out.end());
      out.erase(std::unique(out.begin(), out.end()), out.end());
      return PolicyValue(out);
    }
  }
  return absl::InternalError("unreachable");
}

// The kvpress-style scorers: the policies whose schema has BudgetParams (budget/ratio, interval).
bool IsKvpressScorer(const std::string& name) {
  const PolicySchema* schema = FindPolicySchema(name);
  if (schema == nullptr) return false;
  for (const auto& p : schema->params) {
    if (p.key == "interval") return true;
  }
  return false;
}

absl::Status CheckCombination(PolicySpec& spec) {
  const std::string& n = spec.name;
  auto err = [&](const std::string& msg) {
    return absl::InvalidArgumentError(absl::StrCat("policy '", n, "': ", msg));
  };
  if (IsKvpressScorer(n)) {
    if (spec.Has("budget") == spec.Has("ratio")) {
      return err("give exactly one of 'budget' (tokens kept) or 'ratio' (fraction kept)");
    }
    if ((n == "snapkv" || n == "pyramidkv") && spec.Has("budget") &&
        spec.Int("window") > spec.Int("budget")) {
      return err(absl::StrFormat("window %d is larger than the budget %d; the budget includes "
                                 "the observation window",
                                 spec.Int("window"), spec.Int("budget")));
    }
    if ((n == "snapkv" || n == "pyramidkv") && spec.Int("kernel") % 2 == 0) {
      return err(absl::StrFormat("kernel %d must be odd (pooling keeps the length)", spec.Int("kernel")));
    }
  }
  if (spec.Has("inner")) {  // the wrapped scorer must accept the wrapper's budget
    absl::StatusOr<PolicySpec> inner = InnerScorerSpec(spec);
    if (!inner.ok()) return err(absl::StrCat("inner scorer: ", inner.status().message()));
  }
  if (n == "h2o") {
    bool counts = spec.Has("heavy") || spec.Has("recent");
    bool ratios = spec.Has("heavy_ratio") || spec.Has("recent_ratio");
    if (counts == ratios) {
      return err("give either 'heavy' and 'recent' (token counts) or 'heavy_ratio' and "
                 "'recent_ratio' (fractions of the prompt)");
    }
    if (counts && !(spec.Has("heavy") && spec.Has("recent"))) return err("give both 'heavy' and 'recent'");
    if (ratios && !(spec.Has("heavy_ratio") && spec.Has("recent_ratio"))) {
      return err("give both 'heavy_ratio' and 'recent_ratio'");
    }
    if (counts && spec.Int("heavy") + spec.Int("recent") < 1) return err("heavy + recent must be >= 1");
  }
  if (n == "knorm" && spec.Has("keep_ratio") == spec.Has("budget")) {
    return err("give exactly one of 'keep_ratio' or 'budget'");
  }
  return absl::OkStatus();
}

}  // namespace

// Budget rules. A token count `count_key`, or else a fraction `ratio_key` of the compressed
// tokens, rounded down (kvpress: int(n * (1 - compression_ratio))) or, for knorm, up.
BudgetRule CountOrRatioBudget(std::string count_key, std::string ratio_key, bool round_up) {
  BudgetRule r;
  r.keys = {count_key, ratio_key};
  r.kept = [=](const PolicySpec& s, std::optional<double> tokens) -> std::optional<double> {
    if (s.Has(count_key)) return static_cast<double>(s.Int(count_key));
    if (!s.Has(ratio_key) || !tokens) return std::nullopt;
    const double kept = s.Real(ratio_key) * *tokens;
    return round_up ? std::ceil(kept) : std::floor(kept);
  };
  r.at_budget = [=](int64_t b) { return absl::StrCat(count_key, "=", b); };
  return r;
}
// One required count, plus a fixed part (streaming_llm's sinks).
BudgetRule CountBudget(std::string key, std::string fixed_key, int64_t fixed_default) {
  BudgetRule r;
  r.keys = {key};
  r.kept = [=](const PolicySpec& s, std::optional<double>) -> std::optional<double> {
    if (!s.Has(key)) return std::nullopt;
    return static_cast<double>(s.Int(key) + (fixed_key.empty() ? 0 : s.Int(fixed_key)));
  };
  r.at_budget = [=](int64_t b) {
    return fixed_key.empty() ? absl::StrCat(key, "=", b)
                             : absl::StrCat(fixed_key, "=", fixed_default, ",", key, "=", b - fixed_default);
  };
  return r;
}

std::string FormatPolicyValue(const PolicyValue& v, int double_digits) {
  struct Visitor {
    int digits;
    std::string operator()(int64_t x) const { return absl::StrCat(x); }
    std::string operator()(double x) const { return absl::StrFormat("%.*g", digits, x); }
    std::string operator()(const std::string& x) const { return x; }
    std::string operator()(const std::vector<int64_t>& x) const {
      return absl::StrCat("[", absl::StrJoin(x, ","), "]");
    }
  };
  return std::visit(Visitor{double_digits}, v);
}

std::deque<PolicySchema>& MutableSchemas() {
  static auto* schemas = [] {
    auto* all = new std::deque<PolicySchema>();
    for (PolicySchema& s : BuildSchemas()) all->push_back(std::move(s));
    return all;
  }();
  return *schemas;
}

const std::deque<PolicySchema>& AllPolicySchemas() { return MutableSchemas(); }

absl::Status RegisterPolicySchema(PolicySchema schema) {
  const std::string& n = schema.name;
  if (n.empty() || n.find_first_of(":,=[] ") != std::string::npos) {
    return absl::InvalidArgumentError(absl::StrCat("policy name '", n, "' is empty or has one of ':,=[] '"));
  }
  if (FindPolicySchema(n) != nullptr) {
    return absl::AlreadyExistsError(absl::StrCat("policy '", n, "' is already registered"));
  }
  std::set<std::string> keys;
  for (const ParamSchema& p : schema.params) {
    if (!keys.insert(p.key).second) {
      return absl::InvalidArgumentError(absl::StrCat("policy '", n, "': parameter '", p.key, "' declared twice"));
    }
  }
  if (!schema.budget.kept || !schema.budget.at_budget) {
    return absl::InvalidArgumentError(absl::StrCat("policy '", n, "': its budget rule needs kept and at_budget"));
  }
  for (const std::string& k : schema.budget.keys) {
    if (!keys.count(k)) {
      return absl::InvalidArgumentError(absl::StrCat("policy '", n, "': budget key '", k, "' is not a parameter"));
    }
  }
  MutableSchemas().push_back(std::move(schema));
  return absl::OkStatus();
}

const PolicySchema* FindPolicySchema(std::string_view name) {
  for (const auto& s : AllPolicySchemas()) if (s.name == name) return &s;
  return nullptr;
}

std::string PolicySpec::ToString() const {
  if (params.empty()) return name;
  std::vector<std::string> parts;
  for (const auto& [k, v] : params) parts.push_back(absl::StrCat(k, "=", FormatPolicyValue(v)));
  return absl::StrCat(name, ":", absl::StrJoin(parts, ","));
}

int64_t PolicySpec::Int(const std::string& key, int64_t fallback) const {
  auto it = params.find(key);
  if (it == params.end()) return fallback;
  if (auto* v = std::get_if<int64_t>(&it->second)) return *v;
  if (auto* d = std::get_if<double>(&it->second)) return static_cast<int64_t>(*d);
  return fallback;
}
double PolicySpec::Real(const std::string& key, double fallback) const {
  auto it = params.find(key);
  if (it == params.end()) return fallback;
  if (auto* d = std::get_if<double>(&it->second)) return *d;
  if (auto* v = std::get_if<int64_t>(&it->second)) return static_cast<double>(*v);
  return fallback;
}
std::string PolicySpec::Str(const std::string& key, const std::string& fallback) const {
  auto it = params.find(key);
  if (it == params.end()) return fallback;
  if (auto* s = std::get_if<std::string>(&it->second)) return *s;
  return fallback;
}
std::vector<int64_t> PolicySpec::IntList(const std::string& key) const {
  auto it = params.find(key);
  if (it == params.end()) return {};
  if (auto* l = std::get_if<std::vector<int64_t>>(&it->second)) return *l;
  if (auto* v = std::get_if<int64_t>(&it->second)) return {*v};
  return {};
}

absl::StatusOr<PolicySpec> MakePolicySpec(const std::string& name,
                                          const std::map<std::string, std::string>& raw_params) {
  const PolicySchema* schema = FindPolicySchema(name);
  if (schema == nullptr) {
    std::vector<std::string> names;
    for (const auto& s : AllPolicySchemas()) names.push_back(s.name);
    return absl::InvalidArgumentError(absl::StrFormat("unknown policy '%s'; known policies: %s",
                                                      name, absl::StrJoin(names, ", ")));
  }
  PolicySpec spec;
  spec.name = name;
  for (const auto& [key, raw] : raw_params) {
    const std::string& wanted = key;  // (structured bindings cannot be captured in C++17)
    auto it = std::find_if(schema->params.begin(), schema->params.end(),
                           [&](const ParamSchema& p) { return p.key == wanted; });
    if (it == schema->params.end()) {
      std::vector<std::string> keys;
      for (const auto& p : schema->params) keys.push_back(p.key);
      return absl::InvalidArgumentError(absl::StrFormat(
          "policy '%s': unknown parameter '%s'; known parameters: %s", name, key,
          keys.empty() ? std::string("(none)") : absl::StrJoin(keys, ", ")));
    }
    ASSIGN_OR_RETURN(PolicyValue v, ParseValue(name, *it, raw));
    spec.params[key] = std::move(v);
  }
  for (const auto& p : schema->params) {
    if (spec.Has(p.key)) continue;
    if (p.required) {
      return absl::InvalidArgumentError(
          absl::StrFormat("policy '%s': missing required parameter '%s' (%s)", name, p.key, p.help));
    }
    if (!p.default_value.empty()) {
      ASSIGN_OR_RETURN(PolicyValue v, ParseValue(name, p, p.default_value));
      spec.params[p.key] = std::move(v);
    }
  }
  RETURN_IF_ERROR(CheckCombination(spec));
  return spec;
}

absl::StatusOr<PolicySpec> InnerScorerSpec(const PolicySpec& wrapper) {
  std::map<std::string, std::string> raw;
  for (const char* key : {"budget", "ratio", "interval"}) {
    auto it = wrapper.params.find(key);
    if (it != wrapper.params.end()) raw[key] = FormatPolicyValue(it->second, 17);
  }
  return MakePolicySpec(wrapper.Str("inner"), raw);
}

absl::StatusOr<PolicySpec> ParsePolicySpec(std::string_view text) {
  absl::string_view body = absl::StripAsciiWhitespace(absl::string_view(text.data(), text.size()));
  size_t colon = body.find(':');
  if (colon == absl::string_view::npos) colon = body.size();
  std::string name(absl::StripAsciiWhitespace(body.substr(0, colon)));
  if (name.empty()) return absl::InvalidArgumentError("empty policy spec; expected name[:key=value,...]");
  std::map<std::string, std::string> raw;
  if (colon < body.size()) {
    absl::string_view rest = body.substr(colon + 1);
    // Split on commas that are not inside [...].
    std::vector<std::string> items;
    std::string cur;
    int depth = 0;
    for (char c : rest) {
      if (c == '[') ++depth;
      if (c == ']') --depth;
      if (c == ',' && depth == 0) { items.push_back(cur); cur.clear(); continue; }
      cur.push_back(c);
    }
    if (!cur.empty()) items.push_back(cur);
    for (const auto& item : items) {
      size_t eq = item.find('=');
      if (eq == std::string::npos) {
        return absl::InvalidArgumentError(absl::StrFormat(
            "policy '%s': expected key=value, got '%s' (spec: %s)", name, item, std::string(text)));
      }
      std::string key(absl::StripAsciiWhitespace(item.substr(0, eq)));
      if (raw.count(key)) {
        return absl::InvalidArgumentError(
            absl::StrFormat("policy '%s': parameter '%s' given twice", name, key));
      }
      raw[key] = item.substr(eq + 1);
    }
  }
  return MakePolicySpec(name, raw);
}

std::optional<double> KeptTokens(const PolicySpec& spec, std::optional<double> compressed_tokens) {
  const PolicySchema* schema = FindPolicySchema(spec.name);
  if (schema == nullptr || !schema->budget.kept) return std::nullopt;
  return schema->budget.kept(spec, compressed_tokens);
}

absl::StatusOr<std::string> PolicyTextAtBudget(const std::string& name, int64_t budget) {
  const PolicySchema* schema = FindPolicySchema(name);
  if (schema == nullptr) return ParsePolicySpec(name).status();  // the unknown-policy error
  const std::string params = schema->budget.at_budget ? schema->budget.at_budget(budget) : "";
  if (params.empty()) {
    return absl::InvalidArgumentError(absl::StrCat("policy '", name, "' has no token budget"));
  }
  std::string text = absl::StrCat(name, ":", params);
  RETURN_IF_ERROR(ParsePolicySpec(text).status());
  return text;
}

std::string WhyPolicyCannotUseKvDtype(const PolicySpec& spec, const KvDtype& kv) {
  const PolicySchema* schema = FindPolicySchema(spec.name);
  if (kv.quantized() && schema != nullptr && schema->uneven_heads) {
    return absl::StrCat("policy ", spec.name, " keeps uneven heads (holes), which a quantised "
                        "kv_dtype cannot hold; run it with kv_dtype model");
  }
  return "";
}

std::string WhyPolicyCannotRunProtocol(const PolicySpec& spec, const std::string& protocol) {
  if (protocol == "sliding" && spec.name != "full") {
    return "the sliding protocol keeps no cache across windows, so it runs only with policy full "
           "(it is the full-cache reference); policies are measured with protocol 'streaming' or "
           "'prefill'";
  }
  if (protocol == "streaming" && CompressesOnlyAtPrefill(spec)) {
    const PolicySchema* schema = FindPolicySchema(spec.name);
    for (const auto& p : schema->params) {
      if (p.key == "interval" && p.max <= 0) {
        return absl::StrCat("policy ", spec.name, " compresses only at prefill and has no "
                            "decoding variant, so the streaming protocol cannot measure it; use "
                            "protocol 'prefill' or a generation workload");
      }
    }
    return absl::StrCat("policy ", spec.name, " compresses only at prefill; the streaming "
                        "protocol needs its decoding variant (add interval=N, compress every N "
                        "steps, e.g. ", spec.name, ":...,interval=64)");
  }
  return "";
}

bool CompressesOnlyAtPrefill(const PolicySpec& spec) {
  return IsKvpressScorer(spec.name) && spec.Int("interval", 0) <= 0;
}

}  // namespace kvgrid
