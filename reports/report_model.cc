#include "reports/report_model.h"

#include <algorithm>
#include <cmath>
#include <ctime>
#include <filesystem>
#include <fstream>
#include <functional>
#include <map>
#include <optional>
#include <set>
#include <tuple>
#include <utility>

#include <nlohmann/json.hpp>

#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "absl/strings/str_join.h"
#include "common/status_macros.h"
#include "core/policy_spec.h"

namespace kvgrid::reports {

std::string Fmt(double v) {
  if (!std::isfinite(v)) return "n/a";
  double a = std::abs(v);
  if (a >= 1000) return absl::StrFormat("%.0f", v);
  if (a >= 100) return absl::StrFormat("%.1f", v);
  if (a >= 10) return absl::StrFormat("%.2f", v);
  if (a >= 1) return absl::StrFormat("%.3f", v);
  if (a == 0) return "0";
  return absl::StrFormat("%.3g", v);
}

int Decimals(double v) {
  double a = std::abs(v);
  if (!std::isfinite(a) || a >= 1000) return 0;
  if (a >= 100) return 1;
  if (a >= 10) return 2;
  if (a >= 1) return 3;
  if (a == 0) return 3;
  return std::min(9, 2 - static_cast<int>(std::floor(std::log10(a))));
}

std::string FmtInt(double v) { return absl::StrFormat("%.0f", v); }

std::string FormatSummary(const Summary& s, double scale) {
  if (s.empty()) return "";
  if (s.n == 1) return Fmt(s.median / scale);
  const int d = Decimals(s.median / scale);
  return absl::StrCat(absl::StrFormat("%.*f", d, s.median / scale), " [",
                      absl::StrFormat("%.*f", d, s.SpreadLow() / scale), "–",
                      absl::StrFormat("%.*f", d, s.SpreadHigh() / scale), "] n=", s.n);
}

std::string FormatDelta(std::optional<double> value, std::optional<double> base) {
  if (!value || !base || *base == 0 || !std::isfinite(*value) || !std::isfinite(*base)) return "";
  return absl::StrFormat("%+.1f%%", (*value / *base - 1.0) * 100.0);
}

std::string UtcDate(int64_t ms) {
  if (ms <= 0) return "";
  std::time_t t = static_cast<std::time_t>(ms / 1000);
  std::tm tm{};
  gmtime_r(&t, &tm);
  char buf[32];
  std::strftime(buf, sizeof(buf), "%Y-%m-%d", &tm);
  return buf;
}

std::string JsonScalar(const json& j) {
  if (j.is_string()) return j.get<std::string>();
  if (j.is_null()) return "";
  return j.dump();
}

std::string Heading(int level, const std::string& text) {
  return absl::StrCat(std::string(std::clamp(level, 1, 6), '#'), " ", text, "\n\n");
}

std::string SanitizeFileName(const std::string& s) {
  std::string out;
  for (char c : s) {
    bool ok = (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') ||
              c == '.' || c == '-' || c == '_';
    out += ok ? c : '_';
  }
  return out;
}

PolicyText PolicyTextOf(const PolicySpec& spec) {
  PolicyText p;
  p.text = spec.ToString();
  p.name = spec.name;
  for (const auto& [key, value] : spec.params) p.params[key] = FormatPolicyValue(value);
  p.spec = spec;
  return p;
}

PolicyText ParsePolicyText(const std::string& text) {
  absl::StatusOr<PolicySpec> spec = ParsePolicySpec(text);
  if (spec.ok()) return PolicyTextOf(*spec);
  PolicyText p;
  p.text = text;
  p.name = text.substr(0, text.find(':'));
  return p;
}

std::set<std::string> BudgetKeys(const std::string& policy) {
  const PolicySchema* schema = FindPolicySchema(policy);
  if (schema == nullptr) return {};
  return {schema->budget.keys.begin(), schema->budget.keys.end()};
}

int WorkloadRank(const std::string& w) {
  if (w == "perplexity") return 0;
  if (w == "generation") return 1;
  return 2;
}

int ProtocolRank(const std::string& p) {
  if (p == "sliding") return 0;
  if (p == "streaming") return 1;
  if (p == "prefill") return 2;
  return 3;
}

int PositionRank(const std::string& p) {
  if (p == "original") return 0;
  if (p == "shifted") return 1;
  if (p == "rerotate") return 2;
  return 3;
}

std::optional<PairedDelta> PairedOf(const std::vector<const Run*>& runs, const MetricDef& delta) {
  for (const Run* run : runs) {
    auto pct = run->Metric(delta), lo = run->Metric(CiLowName(delta)), hi = run->Metric(CiHighName(delta));
    if (!pct || !lo || !hi) continue;
    PairedDelta d;
    d.n = static_cast<int64_t>(run->Metric(metric::kRepeats).value_or(1));
    d.pct = *pct;
    d.ci_low = *lo;
    d.ci_high = *hi;
    return d;
  }
  return std::nullopt;
}

std::string ProtocolSettings(const RunSpec& s) {
  if (s.workload == "perplexity") {
    const auto& p = s.perplexity;
    if (p.protocol == "sliding") {
      return absl::StrCat("sliding window ", p.max_length, ", stride ", p.stride,
                          p.max_tokens > 0 ? absl::StrCat(", first ", p.max_tokens, " tokens")
                                           : std::string(", whole text"));
    }
    if (p.protocol == "streaming") {
      return absl::StrCat("streaming, ",
                          p.max_tokens > 0 ? absl::StrCat(p.max_tokens, " tokens")
                                           : std::string("default length"),
                          ", one token per step, policy active every step");
    }
    if (p.protocol == "prefill") {
      return absl::StrCat("prefill: context ", p.context_tokens, " + continuation ",
                          p.continuation_tokens, " tokens, compressed once after the context");
    }
    return p.protocol;
  }
  if (s.workload == "generation") {
    const auto& g = s.generation;
    return absl::StrCat("prompt ", g.prompt_tokens, " tokens, ", g.new_tokens,
                        " new tokens (greedy, EOS ignored), batch ", g.batch);
  }
  return s.workload;
}

std::optional<double> Budget(const Run& r) {
  // Tokens a ratio applies to: the prompt/context the policy compresses.
  std::optional<double> tokens;
  if (r.spec.workload == "generation") tokens = static_cast<double>(r.spec.generation.prompt_tokens);
  if (r.spec.workload == "perplexity" && r.spec.perplexity.protocol == "prefill") {
    tokens = static_cast<double>(r.spec.perplexity.context_tokens);
  }
  if (r.policy.name == "full") return std::nullopt;
  std::optional<double> b;
  if (r.policy.spec) b = KeptTokens(*r.policy.spec, tokens);
  if (!b) b = r.Metric(metric::kKvTokensMax);  // measured cache size as the last resort
  return b;
}

Summary MetricSummary(const Row& row, const std::string& name, double scale) {
  std::vector<double> values;
  bool any_samples = false;
  for (const Run* r : row.runs) {
    if (r->Samples(name) != nullptr) any_samples = true;
  }
  for (const Run* r : row.runs) {
    if (any_samples) {
      if (const auto* s = r->Samples(name)) values.insert(values.end(), s->begin(), s->end());
    } else if (auto m = r->Metric(name)) {
      values.push_back(*m);
    }
  }
  for (double& v : values) v *= scale;
  return Summarize(std::move(values));
}

Summary MetricSummary(const Row& row, const MetricDef& m, double scale) {
  return MetricSummary(row, std::string(m.name), scale);
}

Summary ThroughputSummary(const Row& row) {
  std::vector<double> values;
  for (const Run* r : row.runs) {
    if (const auto* s = r->Samples(metric::kThroughputTokS)) {
      values.insert(values.end(), s->begin(), s->end());
      continue;
    }
    const auto* ttft = r->Samples(metric::kTtftMs);
    const auto* tpot = r->Samples(metric::kTpotMs);
    double n = static_cast<double>(r->spec.generation.new_tokens);
    if (ttft && tpot && ttft->size() == tpot->size() && n >= 1) {
      for (size_t i = 0; i < ttft->size(); ++i) {
        double total_ms = (*ttft)[i] + (n - 1) * (*tpot)[i];
        if (total_ms > 0) values.push_back(n / (total_ms / 1000.0));
      }
      continue;
    }
    if (auto m = r->Metric(metric::kThroughputTokS)) values.push_back(*m);
  }
  return Summarize(std::move(values));
}

PplCell PplOf(const Row& row) {
  PplCell c;
  if (row.runs.size() == 1) {
    const Run& r = *row.runs.front();
    std::optional<double> ppl = r.Metric(metric::kPpl);
    const auto* nll = r.Samples(metric::kNll);
    if (!ppl && nll) {
      auto est = PplFromNll(*nll);
      if (est.ok()) ppl = est->ppl;
    }
    if (!ppl) return c;
    c.central = ppl;
    double pm = 0;
    if (nll && nll->size() >= 2) {
      pm = PplUncertainty(*ppl, *nll);
    } else if (auto se = r.Metric(metric::kPplStderr)) {
      pm = *se;
    }
    c.text = pm > 0 ? absl::StrCat(Fmt(*ppl), " ± ", Fmt(pm)) : Fmt(*ppl);
    return c;
  }
  Summary s = MetricSummary(row, metric::kPpl);
  if (s.empty()) return c;
  c.central = s.median;
  c.text = FormatSummary(s);
  return c;
}

std::optional<double> Central(const Summary& s) {
  if (s.empty()) return std::nullopt;
  return s.median;
}

bool TimedUnderContention(const Row& row) {
  for (const Run* r : row.runs) {
    if (r->Metric(metric::kDisturbedRepeats).value_or(0) > 0) return true;
  }
  return false;
}

std::string PolicyCell(const Row& row) {
  return absl::StrCat("`", row.key.policy, "`", TimedUnderContention(row) ? " †" : "");
}

const char kContentionNote[] =
    "† some repeats were timed while another program kept the run's threads waiting for a CPU "
    "(the contention guard was off or its time ran out; see `cpu_wait_pct`, `disturbed_repeats`): "
    "its timings are not trustworthy";

// A timing Δ cell (delta: kDeltaTtftPct, ...): the row's paired Δ with its interval when its
// run measured one, else the change of `central` vs `base`, marked ᵘ (unpaired) on a policy row.
// Sets *paired / *unpaired when it shows one.
std::string TimingDeltaCell(const Row& r, const MetricDef& delta, const Row* base,
                            const std::function<std::optional<double>(const Row&)>& central,
                            bool* paired, bool* unpaired) {
  if (auto d = PairedOf(r.runs, delta)) {
    *paired = true;
    return FormatPairedDelta(*d);
  }
  std::string cell = base ? FormatDelta(central(r), central(*base)) : std::string();
  if (!cell.empty() && !r.key.is_full_cache()) {
    *unpaired = true;
    cell += " ᵘ";
  }
  return cell;
}

const Row* BaselineRow(const Group& grp) {
  const Row* base = nullptr;
  auto rank = [](const RowKey& r) {
    return std::make_tuple(r.kv_dtype != "model", r.position_mode != "original", r.prefill_chunk > 0);
  };
  for (const auto& [k, row] : grp.rows) {
    if (k.policy_name != "full") continue;
    if (base == nullptr || rank(k) < rank(base->key)) base = &row;
  }
  return base;
}

}  // namespace kvgrid::reports
