// long_context_bench: what KV compression buys at long context, each policy side by side with the
// full cache in one process, interleaved (a program, not a test).
//
//   build/bench/long_context_bench --model DIR [--ids tests/fixtures/text/pg19-test-10146.ids]
//       [--threads 2] [--repeats 5] [--warmup 1] [--rows FILE] [--only 512,2000]
//
// Rows: a prompt length + new tokens, a policy spec and a prefill chunk (0 = whole prompt), one
// per line of --rows ("2000+512 streaming_llm:sink_tokens=4,window=508 chunk=512"; '#' comments),
// or the built-in plan below. Every row of a length group is compared with that group's `full`
// row (whole prompt). Round r runs every row once (RunGenerationTiming, the grid's workload: one
// warm-up generation, then the timed one), so a slow spell of the machine hits every row alike;
// --warmup rounds are discarded. Ratios are
// paired: row / full of the same round, median and min–max over the N rounds.
//   TTFT, TPOT     — as metrics.md (first token on the host; mean decode step).
//   evict ms/tok   — policy scoring + eviction per decode step (inside TPOT), prefill excluded.
//   KV MiB         — K+V storage at its largest (KvCache::PeakAllocatedBytes, inside forwards).
//   RSS MiB        — process peak RSS of the run (VmHWM reset per phase; weights included).
#include <ATen/Parallel.h>
#include <torch/torch.h>

#include <algorithm>
#include <chrono>
#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <fstream>
#include <limits>
#include <map>
#include <set>
#include <sstream>
#include <string>
#include <vector>

#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_split.h"
#include "common/blas_check.h"
#include "common/malloc_tuning.h"
#include "model/engine/gpt_neox.h"
#include "core/policy_spec.h"
#include "reports/statistics.h"
#include "worker/workloads/generation_timing.h"

namespace kvgrid {
namespace {

double NowS() {
  return std::chrono::duration<double>(std::chrono::steady_clock::now().time_since_epoch()).count();
}

// The issue's targets (ISSUE 11): 512+128 and 2000+512 at 256/512 slots, whole prompt; 8000+256
// with 512-token chunks; streaming_llm at 1000+256 for the TPOT-vs-context comparison.
const char kDefaultPlan[] = R"(
512+128 full
512+128 window:window=256
512+128 streaming_llm:sink_tokens=4,window=252
512+128 h2o:heavy=128,recent=128
512+128 tova:cache_size=256
512+128 knorm:budget=256
512+128 snapkv:budget=256
2000+512 full
2000+512 window:window=512
2000+512 streaming_llm:sink_tokens=4,window=508
2000+512 h2o:heavy=256,recent=256
2000+512 tova:cache_size=512
2000+512 knorm:budget=512
2000+512 snapkv:budget=512
1000+256 full
1000+256 streaming_llm:sink_tokens=4,window=508
8000+256 full
8000+256 full chunk=512
8000+256 streaming_llm:sink_tokens=4,window=508
8000+256 streaming_llm:sink_tokens=4,window=508 chunk=512
8000+256 h2o:heavy=256,recent=256 chunk=512
8000+256 tova:cache_size=512 chunk=512
8000+256 snapkv:budget=512 chunk=512
)";

struct Row {
  int64_t prompt = 0, new_tokens = 0, chunk = 0;
  std::string spec;
  PolicySpec policy;
  std::vector<double> ttft, tpot, evict_per_token, kv, rss;
  std::string error;
  std::string Label() const {
    return chunk > 0 ? absl::StrCat(spec, " (chunk ", chunk, ")") : spec;
  }
  std::string Group() const { return absl::StrCat(prompt, "+", new_tokens); }
};

absl::StatusOr<std::vector<Row>> ParsePlan(const std::string& text, const std::set<int64_t>& only) {
  std::vector<Row> rows;
  int line_no = 0;
  for (absl::string_view raw : absl::StrSplit(text, '\n')) {
    ++line_no;
    std::string line(raw.substr(0, raw.find('#')));
    std::istringstream in(line);
    std::string lengths, spec, extra;
    if (!(in >> lengths)) continue;
    auto bad = [&](const std::string& why) {
      return absl::InvalidArgumentError(absl::StrCat("rows line ", line_no, ": ", why, " in '", line, "'"));
    };
    if (!(in >> spec)) return bad("no policy spec");
    Row row;
    std::vector<std::string> pn = absl::StrSplit(lengths, '+');
    if (pn.size() != 2 || !absl::SimpleAtoi(pn[0], &row.prompt) ||
        !absl::SimpleAtoi(pn[1], &row.new_tokens) || row.prompt < 1 || row.new_tokens < 2) {
      return bad("lengths must read PROMPT+NEW (NEW >= 2)");
    }
    while (in >> extra) {
      if (extra.rfind("chunk=", 0) != 0 || !absl::SimpleAtoi(extra.substr(6), &row.chunk) || row.chunk < 0) {
        return bad("expected chunk=N");
      }
    }
    auto policy = ParsePolicySpec(spec);
    if (!policy.ok()) return bad(std::string(policy.status().message()));
    row.policy = *policy;
    row.spec = policy->ToString();
    if (!only.empty() && !only.count(row.prompt)) continue;
    rows.push_back(std::move(row));
  }
  if (rows.empty()) return absl::InvalidArgumentError("no rows to run");
  return rows;
}

absl::StatusOr<std::vector<int64_t>> ReadIds(const std::string& path) {
  std::ifstream in(path);
  if (!in) return absl::NotFoundError(absl::StrCat(path, ": cannot open (--ids FILE)"));
  std::vector<int64_t> ids;
  int64_t id;
  while (in >> id) ids.push_back(id);
  if (!in.eof()) return absl::InvalidArgumentError(absl::StrCat(path, ": not whitespace-separated integers"));
  return ids;
}



std::string Num(double x, int digits) {
  if (!std::isfinite(x)) return "—";
  char buf[64];
  std::snprintf(buf, sizeof buf, "%.*f", digits, x);
  return buf;
}

// "median [lo–hi]" of a sample (min–max below 10 values, as reports::Summarize).
std::string Spread(const std::vector<double>& v, int digits) {
  reports::Summary s = reports::Summarize(v);
  if (s.empty()) return "—";
  return absl::StrCat(Num(s.median, digits), " [", Num(s.SpreadLow(), digits), "–",
                      Num(s.SpreadHigh(), digits), "]");
}

// Paired ratio per round: row[i] / base[i].
std::vector<double> Ratios(const std::vector<double>& row, const std::vector<double>& base) {
  std::vector<double> r;
  for (size_t i = 0; i < row.size() && i < base.size(); ++i) r.push_back(row[i] / base[i]);
  return r;
}

std::string RatioCell(const std::vector<double>& row, const std::vector<double>& base) {
  if (row.empty() || base.empty()) return "—";
  return absl::StrCat(Spread(Ratios(row, base), 2), "×");
}

constexpr double kMiB = 1024.0 * 1024.0;

int Main(int argc, char** argv) {
  std::string model_dir, ids_path = "tests/fixtures/text/pg19-test-10146.ids", rows_path;
  int64_t threads = 2, repeats = 5, warmup = 1;
  std::set<int64_t> only;
  for (int i = 1; i < argc; ++i) {
    const std::string a = argv[i];
    if (a == "--help" || a == "-h" || i + 1 >= argc) {
      std::fprintf(a == "--help" || a == "-h" ? stdout : stderr,
                   "usage: long_context_bench --model DIR [--ids FILE] [--threads N] [--repeats N] "
                   "[--warmup N] [--rows FILE] [--only PROMPT,PROMPT]\n");
      return a == "--help" || a == "-h" ? 0 : 2;
    }
    const std::string v = argv[++i];
    int64_t n = 0;
    auto integer = [&](int64_t min, int64_t* out) {
      if (absl::SimpleAtoi(v, out) && *out >= min) return true;
      std::fprintf(stderr, "long_context_bench: %s needs an integer >= %lld\n", a.c_str(),
                   static_cast<long long>(min));
      return false;
    };
    if (a == "--model") model_dir = v;
    else if (a == "--ids") ids_path = v;
    else if (a == "--rows") rows_path = v;
    else if (a == "--threads") { if (!integer(1, &threads)) return 2; }
    else if (a == "--repeats") { if (!integer(1, &repeats)) return 2; }
    else if (a == "--warmup") { if (!integer(0, &warmup)) return 2; }
    else if (a == "--only") {
      for (absl::string_view p : absl::StrSplit(v, ',', absl::SkipWhitespace())) {
        if (!absl::SimpleAtoi(p, &n)) { std::fprintf(stderr, "long_context_bench: bad --only\n"); return 2; }
        only.insert(n);
      }
    } else {
      std::fprintf(stderr, "long_context_bench: unknown flag %s\n", a.c_str());
      return 2;
    }
  }
  if (model_dir.empty()) {
    std::fprintf(stderr, "long_context_bench: --model DIR is required\n");
    return 2;
  }
  if (!std::ifstream(ids_path) && ids_path.front() != '/') {
    ids_path = std::string(KVGRID_SOURCE_DIR) + "/" + ids_path;
  }
  std::string plan = kDefaultPlan;
  if (!rows_path.empty()) {
    std::ifstream in(rows_path);
    if (!in) { std::fprintf(stderr, "long_context_bench: %s: cannot open\n", rows_path.c_str()); return 2; }
    plan.assign(std::istreambuf_iterator<char>(in), {});
  }
  auto rows_or = ParsePlan(plan, only);
  if (!rows_or.ok()) { std::fprintf(stderr, "long_context_bench: %s\n", rows_or.status().ToString().c_str()); return 2; }
  std::vector<Row> rows = std::move(*rows_or);
  auto ids = ReadIds(ids_path);
  if (!ids.ok()) { std::fprintf(stderr, "long_context_bench: %s\n", ids.status().ToString().c_str()); return 1; }

  at::set_num_threads(static_cast<int>(threads));
  auto loaded = GptNeoxModel::Load(model_dir, torch::kFloat32, torch::Device(torch::kCPU));
  if (!loaded.ok()) { std::fprintf(stderr, "long_context_bench: %s\n", loaded.status().ToString().c_str()); return 1; }
  GptNeoxModel& model = **loaded;
  for (const Row& r : rows) {
    if (r.prompt > static_cast<int64_t>(ids->size())) {
      std::fprintf(stderr, "long_context_bench: %s has %zu ids, a row needs %lld\n", ids_path.c_str(),
                   ids->size(), static_cast<long long>(r.prompt));
      return 1;
    }
  }

  std::string command = argv[0];
  for (int i = 1; i < argc; ++i) absl::StrAppend(&command, " ", argv[i]);
  const ModelConfig& cfg = model.config();
  std::printf("long_context_bench: %s (%lld layers, %lld heads x %lld), float32 on CPU, %d threads, "
              "LibTorch %s\ncommand: %s\nprompt: the first PROMPT ids of %s; greedy, EOS ignored, "
              "batch 1; N = %lld interleaved rounds after %lld warm-up.\n\n",
              model_dir.c_str(), static_cast<long long>(cfg.num_layers),
              static_cast<long long>(cfg.num_heads), static_cast<long long>(cfg.head_dim()),
              at::get_num_threads(), TORCH_VERSION, command.c_str(), ids_path.c_str(),
              static_cast<long long>(repeats), static_cast<long long>(warmup));
  std::printf("BLAS: %s\n\n", BlasEnvironment().dump().c_str());
  std::fflush(stdout);

  const double t_all = NowS();
  for (int64_t round = 0; round < warmup + repeats; ++round) {
    const double t_round = NowS();
    for (Row& row : rows) {
      if (!row.error.empty()) continue;
      GenerationTimingOptions go;
      go.new_tokens = row.new_tokens;
      go.repeats = 1;
      // RunGenerationTiming first returns the heap an earlier row left (so the row's peak RSS is
      // its own); one warm-up generation then takes the first-touch page faults that would
      // otherwise land in every row's timed TTFT (the rounds' own warm-up cannot: the heap is
      // returned at every call).
      go.warmup = 1;
      go.prefill_chunk = row.chunk;
      const std::vector<int64_t> prompt(ids->begin(), ids->begin() + row.prompt);
      auto r = RunGenerationTiming(model, prompt, row.policy, go);
      if (!r.ok()) {
        row.error = r.status().ToString();
        std::fprintf(stderr, "long_context_bench: %s %s: %s\n", row.Group().c_str(),
                     row.Label().c_str(), row.error.c_str());
        continue;
      }
      if (round < warmup) continue;
      for (double v : r->SamplesOf(metric::kTtftMs)) row.ttft.push_back(v);
      for (double v : r->SamplesOf(metric::kTpotMs)) row.tpot.push_back(v);
      row.evict_per_token.push_back(r->Value(metric::kDecodeScoringMs) / (row.new_tokens - 1));
      row.kv.push_back(r->Value(metric::kKvBytesPeak) / kMiB);
      row.rss.push_back(r->Value(metric::kPeakMemoryBytes) / kMiB);
    }
    std::fprintf(stderr, "round %lld/%lld%s: %.1f s\n", static_cast<long long>(round + 1),
                 static_cast<long long>(warmup + repeats), round < warmup ? " (warm-up)" : "",
                 NowS() - t_round);
  }

  std::vector<std::string> groups;
  for (const Row& r : rows) {
    if (std::find(groups.begin(), groups.end(), r.Group()) == groups.end()) groups.push_back(r.Group());
  }
  for (const std::string& g : groups) {
    const Row* base = nullptr;
    for (const Row& r : rows) {
      if (r.Group() == g && r.spec == "full" && r.chunk == 0) base = &r;
    }
    std::printf("### %s tokens (prompt + new)\n\n", g.c_str());
    std::printf("| policy | N | TTFT ms | TPOT ms | evict ms/tok | KV MiB | RSS MiB | TTFT / full "
                "| TPOT / full | KV / full | RSS / full |\n");
    std::printf("| --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: |\n");
    for (const Row& r : rows) {
      if (r.Group() != g) continue;
      if (!r.error.empty()) {
        std::printf("| %s | 0 | failed: %s |||||||||\n", r.Label().c_str(), r.error.c_str());
        continue;
      }
      auto ratio = [&](const std::vector<double> Row::*m) {
        return base ? RatioCell(r.*m, base->*m) : std::string("—");
      };
      std::printf("| %s | %zu | %s | %s | %s | %s | %s | %s | %s | %s | %s |\n", r.Label().c_str(),
                  r.ttft.size(), Spread(r.ttft, 1).c_str(), Spread(r.tpot, 2).c_str(),
                  Spread(r.evict_per_token, 3).c_str(), Num(reports::Summarize(r.kv).median, 1).c_str(),
                  Spread(r.rss, 0).c_str(), ratio(&Row::ttft).c_str(), ratio(&Row::tpot).c_str(),
                  ratio(&Row::kv).c_str(), ratio(&Row::rss).c_str());
    }
    std::printf("\n");
  }
  std::printf("Cells: median [min–max] over the N rounds (p10–p90 from 10). Ratios are paired per "
              "round against the same group's `full` row (whole prompt). evict ms/tok = policy "
              "scoring + eviction per decode step. KV MiB = K+V storage at its largest; RSS MiB = "
              "process peak RSS (weights included). MiB = 2^20 bytes. Random weights: costs are "
              "real, PPL would be meaningless (not measured here). Beyond 2048 tokens Pythia's "
              "rotary positions extrapolate.\n\ntotal %.1f s\n",
              NowS() - t_all);
  for (const Row& r : rows) if (!r.error.empty()) return 1;
  return 0;
}

}  // namespace
}  // namespace kvgrid

int main(int argc, char** argv) {
  kvgrid::EnsureBlasUsesCpuFeatures(argv);
  kvgrid::RetainFreedMemoryForReuse();
  return kvgrid::Main(argc, argv);
}
