#include "coordinator/grid/grid.h"

#include <yaml-cpp/yaml.h>

#include <algorithm>
#include <cctype>
#include <cerrno>
#include <cmath>
#include <cstdlib>
#include <fstream>
#include <map>
#include <set>
#include <sstream>
#include <unordered_set>

#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "absl/strings/str_join.h"
#include "common/status_macros.h"
#include "coordinator/grid/did_you_mean.h"
#include "core/policy_spec.h"

namespace kvgrid {
namespace {

constexpr int64_t kMaxRuns = 100000;  // a grid larger than this is almost certainly a mistake

struct Entry {
  YAML::Node key;
  YAML::Node value;
};

// A scalar value with where it came from.
struct Located {
  std::string text;
  YAML::Mark mark;
};

class GridParser {
 public:
  explicit GridParser(std::string filename) : filename_(std::move(filename)) {}

  absl::StatusOr<Grid> Parse(const std::string& text);

 private:
  absl::Status Error(const YAML::Mark& mark, const std::string& message,
                     const std::string& hint = "") const {
    std::string where = filename_;
    if (mark.line >= 0) absl::StrAppend(&where, ":", mark.line + 1, ":", mark.column + 1);
    std::string msg = absl::StrCat(where, ": ", message);
    if (!hint.empty()) absl::StrAppend(&msg, " (hint: ", hint, ")");
    return absl::InvalidArgumentError(msg);
  }
  static YAML::Mark MarkOf(const Entry& e) {
    return e.value.IsNull() || !e.value.IsDefined() || e.value.Mark().line < 0 ? e.key.Mark()
                                                                               : e.value.Mark();
  }
  static const char* TypeName(const YAML::Node& n) {
    switch (n.Type()) {
      case YAML::NodeType::Null: return "nothing (null)";
      case YAML::NodeType::Scalar: return "a scalar";
      case YAML::NodeType::Sequence: return "a list";
      case YAML::NodeType::Map: return "a mapping";
      default: return "nothing";
    }
  }

  // Checks `node` is a mapping with known, unique scalar keys; returns its entries in order.
  absl::StatusOr<std::vector<Entry>> Mapping(const YAML::Node& node, const YAML::Mark& mark,
                                             const std::string& what,
                                             const std::vector<std::string>& allowed,
                                             const std::string& example) const {
    if (!node.IsMap()) {
      return Error(mark, absl::StrCat(what, " must be a mapping, got ", TypeName(node)),
                   absl::StrCat("write it as ", example));
    }
    std::vector<Entry> out;
    std::set<std::string> seen;
    for (auto it = node.begin(); it != node.end(); ++it) {
      const YAML::Node key = it->first;  // a copy: `it->` is a proxy (temporary)
      if (!key.IsScalar()) {
        return Error(key.Mark(), absl::StrCat(what, ": keys must be plain names"),
                     absl::StrCat("known keys: ", absl::StrJoin(allowed, ", ")));
      }
      const std::string k = key.Scalar();
      if (!allowed.empty() &&
          std::find(allowed.begin(), allowed.end(), k) == allowed.end()) {
        return Error(key.Mark(), absl::StrCat("unknown key '", k, "' in ", what),
                     KnownHint(k, allowed));
      }
      if (!seen.insert(k).second) {
        return Error(key.Mark(), absl::StrCat("duplicate key '", k, "' in ", what),
                     "each key may appear once; put several values in a list to sweep them");
      }
      out.push_back({key, YAML::Node(it->second)});
    }
    return out;
  }

  static const Entry* Find(const std::vector<Entry>& entries, const std::string& key) {
    for (const auto& e : entries) {
      if (e.key.Scalar() == key) return &e;
    }
    return nullptr;
  }

  absl::StatusOr<std::string> String(const Entry& e, const std::string& what) const {
    if (!e.value.IsScalar() || e.value.Scalar().empty()) {
      return Error(MarkOf(e), absl::StrCat(what, " must be a non-empty string, got ",
                                           TypeName(e.value)),
                   absl::StrCat("write it as `", e.key.Scalar(), ": value`"));
    }
    return e.value.Scalar();
  }

  absl::StatusOr<std::string> Choice(const YAML::Node& value, const YAML::Mark& mark,
                                     const std::string& what,
                                     const std::vector<std::string>& choices) const {
    if (!value.IsScalar()) {
      return Error(mark, absl::StrCat(what, " must be one of ", absl::StrJoin(choices, " | "),
                                      ", got ", TypeName(value)));
    }
    const std::string v = value.Scalar();
    if (std::find(choices.begin(), choices.end(), v) == choices.end()) {
      return Error(mark, absl::StrCat(what, ": '", v, "' is not one of ",
                                      absl::StrJoin(choices, " | ")),
                   KnownHint(v, choices));
    }
    return v;
  }

  absl::StatusOr<int64_t> Integer(const YAML::Node& value, const YAML::Mark& mark,
                                  const std::string& what, int64_t min, int64_t max) const {
    if (!value.IsScalar()) {
      return Error(mark, absl::StrCat(what, " must be an integer, got ", TypeName(value)),
                   min == max ? "" : absl::StrCat("an integer in [", min, ", ", max, "]"));
    }
    const std::string& s = value.Scalar();
    errno = 0;
    char* end = nullptr;
    long long v = std::strtoll(s.c_str(), &end, 10);
    if (s.empty() || end == s.c_str() || *end != '\0' || errno != 0) {
      return Error(mark, absl::StrCat(what, " must be an integer, got '", s, "'"),
                   absl::StrCat("an integer in [", min, ", ", max, "]"));
    }
    if (v < min || v > max) {
      return Error(mark, absl::StrCat(what, " = ", v, " is out of range"),
                   absl::StrCat("expected an integer in [", min, ", ", max, "]"));
    }
    return static_cast<int64_t>(v);
  }

  // A scalar, or a list of scalars that expands. Returns the elements.
  absl::StatusOr<std::vector<YAML::Node>> ScalarOrList(const Entry& e,
                                                       const std::string& what) const {
    if (e.value.IsScalar()) return std::vector<YAML::Node>{e.value};
    if (e.value.IsSequence()) {
      if (e.value.size() == 0) {
        return Error(MarkOf(e), absl::StrCat(what, ": empty list"),
                     "give at least one value, or remove the key to use the default");
      }
      std::vector<YAML::Node> out;
      for (const auto& item : e.value) {
        if (!item.IsScalar()) {
          return Error(item.Mark(), absl::StrCat(what, ": list items must be scalars, got ",
                                                 TypeName(item)));
        }
        out.push_back(item);
      }
      return out;
    }
    return Error(MarkOf(e), absl::StrCat(what, " must be a value or a list of values, got ",
                                         TypeName(e.value)),
                 absl::StrCat("`", e.key.Scalar(), ": 1` or `", e.key.Scalar(), ": [1, 2]`"));
  }

  absl::StatusOr<std::vector<int64_t>> IntegerAxis(const std::vector<Entry>& entries,
                                                   const std::string& key,
                                                   const std::string& section, int64_t def,
                                                   int64_t min, int64_t max) const {
    const Entry* e = Find(entries, key);
    if (e == nullptr) return std::vector<int64_t>{def};
    ASSIGN_OR_RETURN(auto nodes, ScalarOrList(*e, absl::StrCat(section, ".", key)));
    std::vector<int64_t> out;
    for (const auto& n : nodes) {
      ASSIGN_OR_RETURN(int64_t v, Integer(n, n.Mark(), absl::StrCat(section, ".", key), min, max));
      out.push_back(v);
    }
    return out;
  }

  absl::StatusOr<int64_t> IntegerScalar(const std::vector<Entry>& entries, const std::string& key,
                                        const std::string& section, int64_t def, int64_t min,
                                        int64_t max) const {
    const Entry* e = Find(entries, key);
    if (e == nullptr) return def;
    if (e->value.IsSequence()) {
      return Error(MarkOf(*e), absl::StrCat(section.empty() ? "" : section + ".", key,
                                            " must be a single integer, not a list"),
                   "this key does not expand into a grid axis");
    }
    return Integer(e->value, MarkOf(*e), section.empty() ? key : section + "." + key, min, max);
  }

  absl::Status CheckProduct(const YAML::Mark& mark, const std::string& what,
                            std::initializer_list<size_t> sizes) const {
    int64_t n = 1;
    for (size_t s : sizes) {
      n *= static_cast<int64_t>(s);
      if (n > kMaxRuns) {
        return Error(mark, absl::StrCat(what, " expands to more than ", kMaxRuns, " variants"),
                     "split the grid into several experiments");
      }
    }
    return absl::OkStatus();
  }

  absl::Status ParseModels(const Entry& e, std::vector<ModelRef>* models) const;
  absl::Status ParseModel(const YAML::Node& node, const YAML::Mark& mark, ModelRef* model) const;
  absl::Status ParseDatasets(const Entry& e, std::vector<DatasetRef>* out) const;
  absl::Status ParseWorkloads(const Entry& e, std::vector<RunSpec>* variants) const;
  absl::Status ParsePolicies(const Entry& e, std::vector<PolicySpec>* out) const;
  absl::Status ExpandPolicyEntry(const YAML::Node& item, std::vector<PolicySpec>* out) const;

  std::string filename_;
};

// `model:` one model (an id, or {id, revision, dtype}) or a list of them: a sweep over model sizes,
// training checkpoints (revisions) or dtypes, each point of the grid run for every model.
absl::Status GridParser::ParseModels(const Entry& e, std::vector<ModelRef>* models) const {
  models->clear();
  if (!e.value.IsSequence()) {
    models->emplace_back();
    return ParseModel(e.value, MarkOf(e), &models->back());
  }
  if (e.value.size() == 0) {
    return Error(MarkOf(e), "model is an empty list",
                 "model:\n  - EleutherAI/pythia-70m-deduped\n  - {id: EleutherAI/pythia-160m-deduped, revision: step143000}");
  }
  std::set<std::string> seen;
  for (const auto& item : e.value) {
    ModelRef m;
    RETURN_IF_ERROR(ParseModel(item, item.Mark(), &m));
    if (!seen.insert(absl::StrCat(m.id, "@", m.revision, " ", m.dtype)).second) {
      return Error(item.Mark(), absl::StrCat("model ", m.id, "@", m.revision, " (", m.dtype, ") is listed twice"),
                   "list each model once");
    }
    models->push_back(std::move(m));
  }
  return absl::OkStatus();
}

absl::Status GridParser::ParseModel(const YAML::Node& node, const YAML::Mark& mark, ModelRef* model) const {
  if (node.IsScalar()) {  // shorthand: `model: EleutherAI/pythia-70m-deduped`
    model->id = node.Scalar();
    return absl::OkStatus();
  }
  ASSIGN_OR_RETURN(auto m, Mapping(node, mark, "model", {"id", "revision", "dtype"},
                                   "`model: {id: EleutherAI/pythia-70m-deduped, revision: main, "
                                   "dtype: float32}`"));
  if (const Entry* id = Find(m, "id")) {
    ASSIGN_OR_RETURN(model->id, String(*id, "model.id"));
  }
  if (const Entry* rev = Find(m, "revision")) {
    ASSIGN_OR_RETURN(model->revision, String(*rev, "model.revision"));
  }
  if (const Entry* dtype = Find(m, "dtype")) {
    ASSIGN_OR_RETURN(model->dtype, Choice(dtype->value, MarkOf(*dtype), "model.dtype",
                                          {"float32", "float16", "bfloat16"}));
  }
  return absl::OkStatus();
}

absl::Status GridParser::ParseDatasets(const Entry& e, std::vector<DatasetRef>* out) const {
  if (!e.value.IsSequence() || e.value.size() == 0) {
    return Error(MarkOf(e), absl::StrCat("datasets must be a non-empty list, got ",
                                         TypeName(e.value)),
                 "datasets:\n  - {name: wikitext-2-raw-v1, split: test}");
  }
  const std::vector<std::string> names = {"wikitext-2-raw-v1", "pg19", "text", "ids"};
  for (const auto& item : e.value) {
    ASSIGN_OR_RETURN(auto d, Mapping(item, item.Mark(), "a dataset entry",
                                     {"name", "split", "samples", "sample", "path"},
                                     "`- {name: wikitext-2-raw-v1, split: test}`"));
    DatasetRef base;
    const Entry* name = Find(d, "name");
    if (name == nullptr) {
      return Error(item.Mark(), "dataset entry without 'name'",
                   absl::StrCat("one of ", absl::StrJoin(names, ", ")));
    }
    ASSIGN_OR_RETURN(base.name, Choice(name->value, MarkOf(*name), "dataset name", names));
    if (const Entry* split = Find(d, "split")) {
      ASSIGN_OR_RETURN(base.split, Choice(split->value, MarkOf(*split), "dataset split",
                                          {"test", "validation", "train"}));
    }
    if (const Entry* path = Find(d, "path")) {
      ASSIGN_OR_RETURN(base.path, String(*path, "dataset path"));
    }
    if ((base.name == "text" || base.name == "ids") && base.path.empty()) {
      return Error(MarkOf(*name), absl::StrCat("dataset '", base.name, "' needs a 'path'"),
                   "add `path: FILE` (read by the worker, relative to its working directory)");
    }
    const Entry* samples = Find(d, "samples");
    const Entry* sample = Find(d, "sample");
    if (samples != nullptr && sample != nullptr) {
      return Error(sample->key.Mark(), "give either 'samples' (the first N) or 'sample' (indices)",
                   "`samples: 2` means samples 0 and 1; `sample: [3, 5]` picks indices");
    }
    std::vector<int64_t> indices = {0};
    if (samples != nullptr) {
      ASSIGN_OR_RETURN(int64_t n, IntegerScalar(d, "samples", "dataset", 1, 1, 10000));
      indices.clear();
      for (int64_t i = 0; i < n; ++i) indices.push_back(i);
    } else if (sample != nullptr) {
      ASSIGN_OR_RETURN(indices, IntegerAxis(d, "sample", "dataset", 0, 0, 1000000));
    }
    if (out->size() + indices.size() > static_cast<size_t>(kMaxRuns)) {
      return Error(item.Mark(), absl::StrCat("datasets expand to more than ", kMaxRuns, " entries"),
                   "split the grid into several experiments");
    }
    for (int64_t i : indices) {
      DatasetRef ref = base;
      ref.sample = i;
      out->push_back(ref);
    }
  }
  return absl::OkStatus();
}

// Grid points that the workloads would refuse: skipped at expansion (with the reason) rather
// than stored as runs that can only fail.
std::string WhyItCannotRun(const RunSpec& s) {
  // The quantised cache's limits (the engine refuses the same: GptNeoxModel::CheckQuantizedCache).
  if (s.kv_dtype.quantized()) {
    if (s.position_mode != "original") {
      return "a quantised kv_dtype needs position_mode original (keys quantised after rotary)";
    }
    if (s.workload == "generation" && s.generation.batch > 1) return "a quantised kv_dtype runs at batch 1";
    if (s.model.dtype == "bfloat16" || absl::StartsWith(s.device, "cuda")) {
      return "a quantised kv_dtype runs on the CPU engine computing in float32 (float16 weights do)";
    }
  }
  if (std::string why = WhyPolicyCannotUseKvDtype(s.policy, s.kv_dtype); !why.empty()) return why;
  if (s.workload != "perplexity") return "";
  return WhyPolicyCannotRunProtocol(s.policy, s.perplexity.protocol);
}

// Expands `workloads:` into partial specs carrying workload + perplexity/generation/noop params.
absl::Status GridParser::ParseWorkloads(const Entry& e, std::vector<RunSpec>* variants) const {
  ASSIGN_OR_RETURN(auto w, Mapping(e.value, MarkOf(e), "workloads",
                                   {"perplexity", "generation", "noop"},
                                   "`workloads: {perplexity: {protocol: sliding}}`"));
  if (w.empty()) {
    return Error(MarkOf(e), "workloads is empty",
                 "add perplexity: {...} and/or generation: {...}");
  }
  const PerplexityParams pd;
  const GenerationParams gd;
  for (const Entry& wl : w) {
    const std::string kind = wl.key.Scalar();
    YAML::Node body = wl.value;
    if (body.IsNull()) body = YAML::Node(YAML::NodeType::Map);  // `perplexity:` = all defaults
    if (kind == "perplexity") {
      ASSIGN_OR_RETURN(auto p, Mapping(body, MarkOf(wl), "workloads.perplexity",
                                       {"protocol", "max_tokens", "max_length", "stride",
                                        "context_tokens", "continuation_tokens"},
                                       "`perplexity: {protocol: [sliding, streaming]}`"));
      std::vector<std::string> protocols = {pd.protocol};
      if (const Entry* pe = Find(p, "protocol")) {
        ASSIGN_OR_RETURN(auto nodes, ScalarOrList(*pe, "perplexity.protocol"));
        protocols.clear();
        for (const auto& n : nodes) {
          ASSIGN_OR_RETURN(std::string proto, Choice(n, n.Mark(), "perplexity.protocol",
                                                     {"sliding", "streaming", "prefill"}));
          protocols.push_back(proto);
        }
      }
      const std::string s = "perplexity";
      ASSIGN_OR_RETURN(auto max_tokens, IntegerAxis(p, "max_tokens", s, pd.max_tokens, 0, 100000000));
      ASSIGN_OR_RETURN(auto max_length, IntegerAxis(p, "max_length", s, pd.max_length, 1, 1000000));
      ASSIGN_OR_RETURN(auto stride, IntegerAxis(p, "stride", s, pd.stride, 1, 1000000));
      ASSIGN_OR_RETURN(auto context, IntegerAxis(p, "context_tokens", s, pd.context_tokens, 1, 10000000));
      ASSIGN_OR_RETURN(auto cont, IntegerAxis(p, "continuation_tokens", s, pd.continuation_tokens, 1, 10000000));
      RETURN_IF_ERROR(CheckProduct(MarkOf(wl), "workloads.perplexity",
                                   {protocols.size(), max_tokens.size(), max_length.size(),
                                    stride.size(), context.size(), cont.size()}));
      for (const auto& proto : protocols)
        for (int64_t mt : max_tokens)
          for (int64_t ml : max_length)
            for (int64_t st : stride)
              for (int64_t ct : context)
                for (int64_t cn : cont) {
                  if (proto == "sliding" && st > ml) {
                    const Entry* se = Find(p, "stride");
                    return Error(se ? MarkOf(*se) : MarkOf(wl),
                                 absl::StrCat("perplexity.stride ", st, " is larger than max_length ",
                                              ml, " (tokens would be skipped)"),
                                 "stride <= max_length; the HF protocol uses stride = max_length/4");
                  }
                  RunSpec v;
                  v.workload = "perplexity";
                  v.perplexity = {proto, mt, ml, st, ct, cn};
                  variants->push_back(v);
                }
    } else if (kind == "generation") {
      ASSIGN_OR_RETURN(auto g, Mapping(body, MarkOf(wl), "workloads.generation",
                                       {"prompt_tokens", "new_tokens", "batch"},
                                       "`generation: {prompt_tokens: [512, 2048], new_tokens: 128}`"));
      const std::string s = "generation";
      ASSIGN_OR_RETURN(auto prompt, IntegerAxis(g, "prompt_tokens", s, gd.prompt_tokens, 1, 10000000));
      ASSIGN_OR_RETURN(auto fresh, IntegerAxis(g, "new_tokens", s, gd.new_tokens, 1, 10000000));
      ASSIGN_OR_RETURN(auto batch, IntegerAxis(g, "batch", s, gd.batch, 1, 4096));
      RETURN_IF_ERROR(CheckProduct(MarkOf(wl), "workloads.generation",
                                   {prompt.size(), fresh.size(), batch.size()}));
      for (int64_t pt : prompt)
        for (int64_t nt : fresh)
          for (int64_t b : batch) {
            RunSpec v;
            v.workload = "generation";
            v.generation = {pt, nt, b};
            variants->push_back(v);
          }
    } else {  // noop: scheduler load tests
      ASSIGN_OR_RETURN(auto n, Mapping(body, MarkOf(wl), "workloads.noop", {"ms"},
                                       "`noop: {ms: 5}`"));
      ASSIGN_OR_RETURN(auto ms, IntegerAxis(n, "ms", "noop", 0, 0, 3600000));
      for (int64_t m : ms) {
        RunSpec v;
        v.workload = "noop";
        v.noop_ms = m;
        variants->push_back(v);
      }
    }
  }
  return absl::OkStatus();
}

absl::Status GridParser::ExpandPolicyEntry(const YAML::Node& item,
                                           std::vector<PolicySpec>* out) const {
  std::vector<std::string> policy_names;
  for (const auto& s : AllPolicySchemas()) policy_names.push_back(s.name);
  if (item.IsScalar()) {  // `- full` or `- "streaming_llm:window=508"`
    auto spec = ParsePolicySpec(item.Scalar());
    if (!spec.ok()) {
      std::string name = item.Scalar().substr(0, item.Scalar().find(':'));
      return Error(item.Mark(), std::string(spec.status().message()),
                   FindPolicySchema(name) ? "check the parameter against the policy's schema"
                                          : KnownHint(name, policy_names));
    }
    out->push_back(*std::move(spec));
    return absl::OkStatus();
  }
  ASSIGN_OR_RETURN(auto entries, Mapping(item, item.Mark(), "a policy entry", {},
                                         "`- {name: streaming_llm, window: [252, 508]}`"));
  const Entry* name_entry = Find(entries, "name");
  if (name_entry == nullptr) {
    return Error(item.Mark(), "policy entry without 'name'", KnownHint("", policy_names));
  }
  ASSIGN_OR_RETURN(std::string name, String(*name_entry, "policy name"));
  const PolicySchema* schema = FindPolicySchema(name);
  if (schema == nullptr) {
    return Error(MarkOf(*name_entry), absl::StrCat("unknown policy '", name, "'"),
                 KnownHint(name, policy_names));
  }
  std::vector<std::string> param_keys;
  for (const auto& p : schema->params) param_keys.push_back(p.key);
  // Each parameter: a list of candidate textual values, each with its location.
  std::vector<std::pair<std::string, std::vector<Located>>> axes;
  for (const Entry& e : entries) {
    const std::string key = e.key.Scalar();
    if (key == "name") continue;
    auto it = std::find_if(schema->params.begin(), schema->params.end(),
                           [&](const ParamSchema& p) { return p.key == key; });
    if (it == schema->params.end()) {
      return Error(e.key.Mark(), absl::StrCat("policy '", name, "' has no parameter '", key, "'"),
                   param_keys.empty() ? "this policy takes no parameters"
                                      : KnownHint(key, param_keys));
    }
    std::vector<Located> values;
    const std::string what = absl::StrCat("policy '", name, "' parameter '", key, "'");
    if (it->type == ParamType::kIntList) {
      // A list-valued parameter: a scalar is a one-element list, [[...], ...] sweeps lists.
      auto as_list = [&](const YAML::Node& seq) -> absl::StatusOr<Located> {
        std::vector<std::string> parts;
        for (const auto& x : seq) {
          if (!x.IsScalar()) {
            return Error(x.Mark(), absl::StrCat(what, ": expected integers, got ", TypeName(x)));
          }
          parts.push_back(x.Scalar());
        }
        return Located{absl::StrCat("[", absl::StrJoin(parts, ","), "]"), seq.Mark()};
      };
      if (e.value.IsScalar()) {
        values.push_back({absl::StrCat("[", e.value.Scalar(), "]"), e.value.Mark()});
      } else if (e.value.IsSequence() && e.value.size() > 0 && e.value[0].IsSequence()) {
        for (const auto& inner : e.value) {
          if (!inner.IsSequence()) {
            return Error(inner.Mark(), absl::StrCat(what, ": mix of lists and scalars"),
                         absl::StrCat("write every value as a list: `", key, ": [[0], [0, 1]]`"));
          }
          ASSIGN_OR_RETURN(Located l, as_list(inner));
          values.push_back(l);
        }
      } else if (e.value.IsSequence()) {
        return Error(MarkOf(e), absl::StrCat(what, " is list-valued; a plain list is ambiguous"),
                     absl::StrCat("nest it: `", key, ": [[0, 1]]` for one value, `", key,
                                  ": [[0], [0, 1]]` to sweep several"));
      } else {
        return Error(MarkOf(e), absl::StrCat(what, " must be a list of integers, got ",
                                             TypeName(e.value)),
                     absl::StrCat("`", key, ": [[0]]`"));
      }
    } else {
      ASSIGN_OR_RETURN(auto nodes, ScalarOrList(e, what));
      for (const auto& n : nodes) values.push_back({n.Scalar(), n.Mark()});
    }
    axes.emplace_back(key, std::move(values));
  }
  // Cartesian product over the parameter axes, first key slowest.
  int64_t count = 1;
  for (const auto& [k, v] : axes) {
    count *= static_cast<int64_t>(v.size());
    if (count > kMaxRuns) {
      return Error(item.Mark(), absl::StrCat("policy '", name, "' expands to more than ", kMaxRuns,
                                             " settings"),
                   "split the grid into several experiments");
    }
  }
  std::vector<size_t> idx(axes.size(), 0);
  for (int64_t n = 0; n < count; ++n) {
    std::map<std::string, std::string> raw;
    for (size_t a = 0; a < axes.size(); ++a) raw[axes[a].first] = axes[a].second[idx[a]].text;
    auto spec = MakePolicySpec(name, raw);
    if (!spec.ok()) {
      // Point at the value the message is about, else at the policy's name.
      YAML::Mark mark = MarkOf(*name_entry);
      std::string hint;
      const std::string msg(spec.status().message());
      for (size_t a = 0; a < axes.size(); ++a) {
        if (msg.find(absl::StrCat("'", axes[a].first, "'")) != std::string::npos) {
          mark = axes[a].second[idx[a]].mark;
          for (const auto& p : schema->params) {
            if (p.key == axes[a].first) hint = p.help;
          }
          break;
        }
      }
      if (hint.empty()) {
        std::vector<std::string> described;
        for (const auto& p : schema->params) described.push_back(p.key + ": " + p.help);
        hint = described.empty() ? "" : absl::StrJoin(described, "; ");
      }
      return Error(mark, msg, hint);
    }
    out->push_back(*std::move(spec));
    for (size_t a = axes.size(); a-- > 0;) {
      if (++idx[a] < axes[a].second.size()) break;
      idx[a] = 0;
    }
  }
  return absl::OkStatus();
}

absl::Status GridParser::ParsePolicies(const Entry& e, std::vector<PolicySpec>* out) const {
  ASSIGN_OR_RETURN(auto g, Mapping(e.value, MarkOf(e), "grid", {"policy"},
                                   "`grid: {policy: [{name: full}]}`"));
  const Entry* p = Find(g, "policy");
  if (p == nullptr) {
    return Error(MarkOf(e), "grid has no 'policy' list", "grid:\n  policy:\n    - {name: full}");
  }
  if (p->value.IsScalar() || p->value.IsMap()) {
    return ExpandPolicyEntry(p->value, out);
  }
  if (!p->value.IsSequence() || p->value.size() == 0) {
    return Error(MarkOf(*p), "grid.policy must be a non-empty list of policies",
                 "policy:\n    - {name: full}\n    - {name: streaming_llm, window: [252, 508]}");
  }
  for (const auto& item : p->value) {
    RETURN_IF_ERROR(ExpandPolicyEntry(item, out));
    if (out->size() > static_cast<size_t>(kMaxRuns)) {
      return Error(item.Mark(), absl::StrCat("grid.policy expands to more than ", kMaxRuns,
                                             " settings"),
                   "split the grid into several experiments");
    }
  }
  return absl::OkStatus();
}

absl::StatusOr<Grid> GridParser::Parse(const std::string& text) {
  YAML::Node root;
  try {
    root = YAML::Load(text);
  } catch (const YAML::Exception& ex) {
    return Error(ex.mark, absl::StrCat("YAML syntax error: ", ex.msg),
                 "check indentation, brackets and quotes around this point");
  }
  const YAML::Mark start;  // line 0, column 0
  const std::vector<std::string> top = {
      "name", "description", "model", "device", "repeats", "warmup", "max_attempts",
      "position_mode", "kv_dtype", "prefill_chunk", "paired_baseline", "seed", "threads", "datasets",
      "workloads", "grid"};
  if (!root.IsDefined() || root.IsNull()) {
    return Error(start, "the grid is empty", "start with `name: my-experiment`");
  }
  ASSIGN_OR_RETURN(auto entries, Mapping(root, start, "the grid", top,
                                         "`name: ...`, `model: ...`, `datasets: ...` at the top level"));
  Grid grid;
  grid.filename = filename_;
  grid.yaml = text;
  RunSpec base;
  base.device = "auto";

  const Entry* name = Find(entries, "name");
  if (name == nullptr) {
    return Error(start, "the grid has no 'name'", "add `name: my-experiment` at the top");
  }
  ASSIGN_OR_RETURN(grid.name, String(*name, "name"));
  for (char c : grid.name) {
    if (!(std::isalnum(static_cast<unsigned char>(c)) || c == '-' || c == '_' || c == '.')) {
      return Error(MarkOf(*name), absl::StrCat("experiment name '", grid.name,
                                               "' contains '", std::string(1, c), "'"),
                   "use letters, digits, '-', '_' and '.'");
    }
  }
  if (const Entry* d = Find(entries, "description")) {
    if (!d->value.IsScalar()) return Error(MarkOf(*d), "description must be text");
  }
  std::vector<ModelRef> models = {base.model};
  if (const Entry* m = Find(entries, "model")) RETURN_IF_ERROR(ParseModels(*m, &models));
  if (const Entry* dev = Find(entries, "device")) {
    if (!dev->value.IsScalar()) {
      return Error(MarkOf(*dev), absl::StrCat("device must be cpu, cuda, cuda:N or auto, got ",
                                              TypeName(dev->value)),
                   "one grid targets one device kind; submit a second grid for another");
    }
    const std::string v = dev->value.Scalar();
    bool ok = v == "cpu" || v == "cuda" || v == "auto";
    if (!ok && v.rfind("cuda:", 0) == 0 && v.size() > 5) {
      ok = std::all_of(v.begin() + 5, v.end(), [](char c) { return std::isdigit(static_cast<unsigned char>(c)); });
    }
    if (!ok) {
      return Error(MarkOf(*dev), absl::StrCat("device '", v, "' is not cpu, cuda, cuda:N or auto"),
                   KnownHint(v, {"cpu", "cuda", "auto"}));
    }
    base.device = v;
  }
  ASSIGN_OR_RETURN(base.repeats, IntegerScalar(entries, "repeats", "", base.repeats, 1, 100000));
  ASSIGN_OR_RETURN(base.warmup, IntegerScalar(entries, "warmup", "", base.warmup, 0, 100000));
  ASSIGN_OR_RETURN(int64_t max_attempts, IntegerScalar(entries, "max_attempts", "", 3, 1, 100));
  grid.max_attempts = static_cast<int>(max_attempts);
  ASSIGN_OR_RETURN(base.threads, IntegerScalar(entries, "threads", "", 0, 0, 4096));
  ASSIGN_OR_RETURN(auto seeds, IntegerAxis(entries, "seed", "", 0, 0, int64_t{1} << 53));
  ASSIGN_OR_RETURN(auto chunks, IntegerAxis(entries, "prefill_chunk", "", 0, 0, 10000000));
  bool paired_baseline = true;
  if (const Entry* pb = Find(entries, "paired_baseline")) {
    ASSIGN_OR_RETURN(std::string v, Choice(pb->value, MarkOf(*pb), "paired_baseline", {"true", "false"}));
    paired_baseline = v == "true";
  }

  std::vector<std::string> modes = {"original"};
  if (const Entry* pm = Find(entries, "position_mode")) {
    ASSIGN_OR_RETURN(auto nodes, ScalarOrList(*pm, "position_mode"));
    modes.clear();
    for (const auto& n : nodes) {
      ASSIGN_OR_RETURN(std::string m, Choice(n, n.Mark(), "position_mode",
                                             {"original", "shifted", "rerotate"}));
      modes.push_back(m);
    }
  }
  std::vector<KvDtype> kv_dtypes = {KvDtype{}};
  if (const Entry* kd = Find(entries, "kv_dtype")) {
    ASSIGN_OR_RETURN(auto nodes, ScalarOrList(*kd, "kv_dtype"));
    kv_dtypes.clear();
    for (const auto& n : nodes) {
      absl::StatusOr<KvDtype> kv = ParseKvDtype(n.IsScalar() ? n.Scalar() : "");
      if (!kv.ok()) {
        return Error(n.Mark(), std::string(kv.status().message()),
                     "model | int8 | int4 | int2, optionally int4:group=32,residual=128");
      }
      kv_dtypes.push_back(*kv);
    }
  }
  // The cache axis: position modes x storage types.
  std::vector<std::pair<std::string, KvDtype>> caches;
  for (const auto& mode : modes) {
    for (const auto& kv : kv_dtypes) caches.emplace_back(mode, kv);
  }

  const Entry* ds = Find(entries, "datasets");
  if (ds == nullptr) {
    return Error(start, "the grid has no 'datasets'",
                 "datasets:\n  - {name: wikitext-2-raw-v1, split: test}");
  }
  std::vector<DatasetRef> datasets;
  RETURN_IF_ERROR(ParseDatasets(*ds, &datasets));

  const Entry* wl = Find(entries, "workloads");
  if (wl == nullptr) {
    return Error(start, "the grid has no 'workloads'",
                 "workloads:\n  perplexity: {protocol: sliding}\n  generation: {prompt_tokens: 512}");
  }
  std::vector<RunSpec> workloads;
  RETURN_IF_ERROR(ParseWorkloads(*wl, &workloads));

  const Entry* g = Find(entries, "grid");
  if (g == nullptr) {
    return Error(start, "the grid has no 'grid' section",
                 "grid:\n  policy:\n    - {name: full}");
  }
  std::vector<PolicySpec> policies;
  RETURN_IF_ERROR(ParsePolicies(*g, &policies));

  const int64_t total = static_cast<int64_t>(models.size()) * static_cast<int64_t>(policies.size()) *
                        static_cast<int64_t>(datasets.size()) *
                        static_cast<int64_t>(workloads.size()) *
                        static_cast<int64_t>(caches.size()) * static_cast<int64_t>(seeds.size()) *
                        static_cast<int64_t>(chunks.size());
  if (total > kMaxRuns) {
    return Error(MarkOf(*g), absl::StrCat("the grid expands to ", total, " runs (limit ", kMaxRuns,
                                          ")"),
                 "split it into several experiments");
  }
  std::unordered_set<std::string> seen;
  std::map<std::string, int64_t> skipped;  // reason -> count
  for (const auto& model : models)
  for (const auto& policy : policies)
    for (const auto& dataset : datasets)
      for (const auto& w : workloads)
        for (const auto& [mode, kv] : caches)
          for (int64_t seed : seeds)
           for (int64_t chunk : chunks) {
            RunSpec s = base;
            s.model = model;
            s.policy = policy;
            s.dataset = dataset;
            s.workload = w.workload;
            s.perplexity = w.perplexity;
            s.generation = w.generation;
            s.generation.paired_baseline = paired_baseline;
            s.noop_ms = w.noop_ms;
            s.position_mode = mode;
            s.kv_dtype = kv;
            s.seed = seed;
            // Chunking applies to a prompt (generation) or a compressed context (prefill
            // protocol); elsewhere the point is the unchunked one (deduplicated below).
            const bool chunkable = s.workload == "generation" ||
                                   (s.workload == "perplexity" && s.perplexity.protocol == "prefill");
            s.prefill_chunk = chunkable ? chunk : 0;
            if (std::string why = WhyItCannotRun(s); !why.empty()) {
              ++skipped[why];
              continue;
            }
            std::string key = RunKey(s);
            if (!seen.insert(key).second) continue;
            grid.runs.push_back(std::move(s));
            grid.run_keys.push_back(std::move(key));
          }
  for (const auto& [why, n] : skipped) {
    grid.skipped.push_back(absl::StrCat(n, " point(s) left out: ", why));
  }
  if (grid.runs.empty()) {
    return Error(MarkOf(*g), "no point of the grid can run",
                 grid.skipped.empty() ? "add a policy" : grid.skipped.front());
  }
  return grid;
}

}  // namespace

absl::StatusOr<Grid> ParseGridYaml(const std::string& text, const std::string& filename) {
  GridParser parser(filename.empty() ? std::string("<string>") : filename);
  try {
    return parser.Parse(text);
  } catch (const YAML::Exception& ex) {
    std::string where = filename;
    if (ex.mark.line >= 0) absl::StrAppend(&where, ":", ex.mark.line + 1, ":", ex.mark.column + 1);
    return absl::InvalidArgumentError(absl::StrCat(where, ": ", ex.msg));
  } catch (const std::exception& ex) {
    return absl::InvalidArgumentError(absl::StrCat(filename, ": ", ex.what()));
  }
}

absl::StatusOr<Grid> ParseGridFile(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  if (!in) return absl::NotFoundError(absl::StrCat("cannot read grid file ", path));
  std::stringstream ss;
  ss << in.rdbuf();
  if (in.bad()) return absl::DataLossError(absl::StrCat("error reading grid file ", path));
  return ParseGridYaml(ss.str(), path);
}

}  // namespace kvgrid
