// policy_bench: every KV policy at two budgets on one model, as a markdown table (a program, not a
// test).
//
//   build/bench/policy_bench --model DIR [--text tests/fixtures/text/wikitext-2-raw-v1-test.txt]
//       [--tokenizer FILE] [--threads 2] [--ppl-tokens 1024] [--repeats 3] [--warmup 1]
//       [--budgets 128,256] [--interval 32] [--context 512] [--continuation 128]
//       [--prefill-segments 2] [--prompt 512] [--new-tokens 128] [--policies full,snapkv,...]
//       [--kv-dtypes model,int8,int4,int2]
//
// The text is tokenised with the project's tokenizer (DIR/tokenizer.json unless --tokenizer) and
// every number comes from the workloads the grid runs (worker/workloads: RunPerplexity,
// RunGenerationTiming), so the table is what `kvgrid ppl|bench` would report:
//   sliding PPL   — HF strided window (max_length min(2048, max_position_embeddings), stride 512)
//                   over the first --ppl-tokens tokens; full cache only (it keeps no cache).
//   streaming PPL — one token per forward over the first --ppl-tokens tokens, the policy acting
//                   every step; prefill-only scorers run their decoding variant (interval=N).
//   prefill PPL   — --prefill-segments segments of --context + --continuation tokens; the
//                   policy compresses each context once, the continuation is teacher-forced.
//   generation    — --prompt tokens of the text, --new-tokens greedy tokens (EOS ignored),
//                   --warmup discarded rounds, then --repeats timed rounds; each round runs
//                   every policy once (interleaved, so machine drift hits every row alike).
// Budget B (tokens) in each policy's own parameters, by its schema's budget rule
// (core/policy_spec.cc; `kvgrid policies` lists them): window=B; streaming_llm 4 sinks + window
// B-4; h2o heavy=recent=B/2; tova cache_size=B; the others budget=B, other parameters at their
// defaults (snapkv's observation window 32, chunkkv's inner snapkv). Positional mode: shifted
// (in-cache positions, StreamingLLM's pos-shift) for streaming_llm and window, original
// otherwise; the same mode in all three protocols of a row. --kv-dtypes repeats every row per KV
// storage type (core/kv_dtype.h, KIVI); a quantised row runs in original mode (KIVI quantises
// keys after rotary) and has no sliding column (its prefill attention is the float one).
#include <ATen/Parallel.h>
#include <torch/torch.h>

#include <algorithm>
#include <chrono>
#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <fstream>
#include <limits>
#include <set>
#include <string>
#include <vector>

#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_split.h"
#include "common/blas_check.h"
#include "common/malloc_tuning.h"
#include "common/status_macros.h"
#include "model/engine/gpt_neox.h"
#include "core/kv_dtype.h"
#include "core/policy_spec.h"
#include "model/tokenizer/tokenizer.h"
#include "reports/statistics.h"
#include "worker/workloads/generation_timing.h"
#include "worker/workloads/perplexity.h"

namespace kvgrid {
namespace {

double NowS() {
  return std::chrono::duration<double>(std::chrono::steady_clock::now().time_since_epoch()).count();
}

struct Options {
  std::string model_dir;
  std::string text = "tests/fixtures/text/wikitext-2-raw-v1-test.txt";
  std::string tokenizer;  // default: DIR/tokenizer.json
  int threads = 2;
  int64_t ppl_tokens = 1024;
  int64_t repeats = 3;
  int64_t warmup = 1;
  std::vector<int64_t> budgets = {128, 256};
  std::vector<KvDtype> kv_dtypes = {KvDtype{}};
  int64_t interval = 32;
  int64_t context = 512;
  int64_t continuation = 128;
  int64_t prefill_segments = 2;
  int64_t prompt = 512;
  int64_t new_tokens = 128;
  std::set<std::string> policies;  // empty = all
};

const char kUsage[] =
    "usage: policy_bench --model DIR [--text FILE] [--tokenizer FILE] [--threads N]\n"
    "                    [--ppl-tokens N] [--repeats N] [--warmup N] [--budgets B1,B2,...]\n"
    "                    [--interval N] [--context N] [--continuation N] [--prefill-segments N]\n"
    "                    [--prompt N] [--new-tokens N] [--policies NAME,NAME,...]\n"
    "                    [--kv-dtypes model,int8,int4,int2]\n";

bool ParseInt(const std::string& flag, const std::string& text, int64_t min, int64_t* out) {
  if (!absl::SimpleAtoi(text, out) || *out < min) {
    std::fprintf(stderr, "policy_bench: %s needs an integer >= %lld, got '%s'\n", flag.c_str(),
                 static_cast<long long>(min), text.c_str());
    return false;
  }
  return true;
}

bool ParseArgs(int argc, char** argv, Options* o) {
  for (int i = 1; i < argc; ++i) {
    const std::string a = argv[i];
    if (a == "--help" || a == "-h") {
      std::fputs(kUsage, stdout);
      std::exit(0);
    }
    if (i + 1 >= argc) {
      std::fprintf(stderr, "policy_bench: %s needs a value\n%s", a.c_str(), kUsage);
      return false;
    }
    const std::string v = argv[++i];
    int64_t n = 0;
    if (a == "--model") o->model_dir = v;
    else if (a == "--text") o->text = v;
    else if (a == "--tokenizer") o->tokenizer = v;
    else if (a == "--threads") { if (!ParseInt(a, v, 1, &n)) return false; o->threads = static_cast<int>(n); }
    else if (a == "--ppl-tokens") { if (!ParseInt(a, v, 2, &o->ppl_tokens)) return false; }
    else if (a == "--repeats") { if (!ParseInt(a, v, 1, &o->repeats)) return false; }
    else if (a == "--warmup") { if (!ParseInt(a, v, 0, &o->warmup)) return false; }
    else if (a == "--interval") { if (!ParseInt(a, v, 1, &o->interval)) return false; }
    else if (a == "--context") { if (!ParseInt(a, v, 1, &o->context)) return false; }
    else if (a == "--continuation") { if (!ParseInt(a, v, 1, &o->continuation)) return false; }
    else if (a == "--prefill-segments") { if (!ParseInt(a, v, 1, &o->prefill_segments)) return false; }
    else if (a == "--prompt") { if (!ParseInt(a, v, 1, &o->prompt)) return false; }
    else if (a == "--new-tokens") { if (!ParseInt(a, v, 2, &o->new_tokens)) return false; }
    else if (a == "--budgets") {
      o->budgets.clear();
      for (absl::string_view part : absl::StrSplit(v, ',', absl::SkipWhitespace())) {
        if (!ParseInt(a, std::string(part), 8, &n)) return false;
        o->budgets.push_back(n);
      }
      if (o->budgets.empty()) { std::fprintf(stderr, "policy_bench: --budgets is empty\n"); return false; }
    } else if (a == "--kv-dtypes") {
      o->kv_dtypes.clear();
      for (absl::string_view part : absl::StrSplit(v, ',', absl::SkipWhitespace())) {
        auto kv = ParseKvDtype(std::string(part));
        if (!kv.ok()) { std::fprintf(stderr, "policy_bench: --kv-dtypes: %s\n", kv.status().ToString().c_str()); return false; }
        o->kv_dtypes.push_back(*kv);
      }
      if (o->kv_dtypes.empty()) { std::fprintf(stderr, "policy_bench: --kv-dtypes is empty\n"); return false; }
    } else if (a == "--policies") {
      for (absl::string_view part : absl::StrSplit(v, ',', absl::SkipWhitespace())) {
        o->policies.insert(std::string(part));
      }
    } else {
      std::fprintf(stderr, "policy_bench: unknown flag %s\n%s", a.c_str(), kUsage);
      return false;
    }
  }
  if (o->model_dir.empty()) {
    std::fprintf(stderr, "policy_bench: --model DIR is required\n%s", kUsage);
    return false;
  }
  if (o->tokenizer.empty()) o->tokenizer = o->model_dir + "/tokenizer.json";
  // The default text is relative to the repository root; found from elsewhere too.
  if (o->text == Options().text && !std::ifstream(o->text)) {
    o->text = std::string(KVGRID_SOURCE_DIR) + "/" + o->text;
  }
  return true;
}

// The first `needed` ids of the text. Only a prefix is tokenised (the whole wikitext test split
// is 1.3 MB); it is grown until it yields a margin of ids beyond `needed`, so the ids kept are
// not affected by where the prefix was cut.
absl::StatusOr<std::vector<int64_t>> TokenizeText(const Options& o, int64_t needed) {
  auto tok = Tokenizer::FromFile(o.tokenizer);
  if (!tok.ok()) {
    return absl::Status(tok.status().code(),
                        absl::StrCat(tok.status().message(),
                                     " (give the tokenizer.json with --tokenizer FILE)"));
  }
  std::ifstream in(o.text, std::ios::binary);
  if (!in) return absl::NotFoundError(absl::StrCat(o.text, ": cannot open the text (--text FILE)"));
  const std::string text((std::istreambuf_iterator<char>(in)), {});
  const int64_t margin = 64;
  size_t bytes = static_cast<size_t>((needed + margin) * 6);
  while (true) {
    const bool whole = bytes >= text.size();
    std::vector<int32_t> ids = tok->Encode(std::string_view(text).substr(0, std::min(bytes, text.size())));
    if (static_cast<int64_t>(ids.size()) >= needed + margin || whole) {
      if (static_cast<int64_t>(ids.size()) < needed) {
        return absl::InvalidArgumentError(absl::StrCat(o.text, " has ", ids.size(),
                                                       " tokens; the benchmark needs ", needed));
      }
      return std::vector<int64_t>(ids.begin(), ids.begin() + needed);
    }
    bytes *= 2;
  }
}

struct Row {
  std::string spec;        // canonical streaming spec (what the streaming column ran)
  std::string prefill_spec;
  PositionMode mode = PositionMode::kOriginal;
  KvDtype kv;  // the cache's storage type
  double sliding_ppl = std::numeric_limits<double>::quiet_NaN();
  double streaming_ppl = std::numeric_limits<double>::quiet_NaN();
  double prefill_ppl = std::numeric_limits<double>::quiet_NaN();
  double kv_tokens_max = std::numeric_limits<double>::quiet_NaN();
  double kv_bytes_peak = std::numeric_limits<double>::quiet_NaN();
  double scoring_ms_per_token = std::numeric_limits<double>::quiet_NaN();
  std::vector<double> ttft, tpot;
  double gen_kv_peak = std::numeric_limits<double>::quiet_NaN();
  double gen_kv_end = std::numeric_limits<double>::quiet_NaN();
  double gen_kv_live_end = std::numeric_limits<double>::quiet_NaN();
  double gen_kv_tokens_max = std::numeric_limits<double>::quiet_NaN();
  std::vector<std::string> errors;
};

// The policy's spec keeping B tokens (its schema's budget rule, core/policy_spec.h); `streaming`
// adds the decoding variant's interval to the prefill-only scorers that have one (adakv has
// none: its streaming column stays empty).
absl::StatusOr<std::string> SpecFor(const std::string& name, int64_t B, int64_t interval, bool streaming) {
  ASSIGN_OR_RETURN(std::string text, PolicyTextAtBudget(name, B));
  ASSIGN_OR_RETURN(PolicySpec spec, ParsePolicySpec(text));
  if (streaming && CompressesOnlyAtPrefill(spec)) {
    const std::string decoding = absl::StrCat(text, ",interval=", interval);
    if (ParsePolicySpec(decoding).ok()) return decoding;
  }
  return text;
}

PositionMode ModeFor(const std::string& name) {
  return name == "streaming_llm" || name == "window" ? PositionMode::kShifted : PositionMode::kOriginal;
}




// Linear-interpolation quantile of a sample (the reports' convention, reports/statistics.h).
double Quantile(std::vector<double> v, double q) {
  if (v.empty()) return std::numeric_limits<double>::quiet_NaN();
  std::sort(v.begin(), v.end());
  return reports::QuantileSorted(v, q);
}

std::string Num(double x, int digits) {
  if (!std::isfinite(x)) return "—";
  char buf[64];
  std::snprintf(buf, sizeof buf, "%.*f", digits, x);
  return buf;
}

// PPL with 4 significant digits for small values, fewer decimals for big ones (random models).
std::string Ppl(double x) {
  if (!std::isfinite(x)) return "—";
  if (x >= 1e5) {
    char buf[64];
    std::snprintf(buf, sizeof buf, "%.4g", x);
    return buf;
  }
  return Num(x, x >= 1000 ? 1 : x >= 100 ? 2 : 3);
}

// The row's label: the spec as run in prefill and generation; the streaming column's extra
// interval (prefill-only scorers' decoding variant) and a non-original positional mode appended.
std::string Label(const Row& r) {
  std::string label = r.prefill_spec;
  if (r.spec != r.prefill_spec) {
    absl::StrAppend(&label, " (streaming: +", r.spec.substr(r.prefill_spec.size() + 1), ")");
  }
  if (r.mode != PositionMode::kOriginal) absl::StrAppend(&label, " [", PositionModeName(r.mode), "]");
  if (r.kv.quantized()) absl::StrAppend(&label, " + KV ", r.kv.ToString());
  return label;
}

int Main(int argc, char** argv) {
  Options o;
  if (!ParseArgs(argc, argv, &o)) return 2;
  at::set_num_threads(o.threads);
  torch::manual_seed(0);

  auto loaded = GptNeoxModel::Load(o.model_dir, torch::kFloat32, torch::Device(torch::kCPU));
  if (!loaded.ok()) {
    std::fprintf(stderr, "policy_bench: %s\n", loaded.status().ToString().c_str());
    return 1;
  }
  GptNeoxModel& model = **loaded;
  const ModelConfig& cfg = model.config();
  const int64_t prefill_tokens = o.prefill_segments * (o.context + o.continuation);
  const int64_t needed = std::max({o.ppl_tokens, prefill_tokens, o.prompt});
  const double t_tok = NowS();
  auto ids_or = TokenizeText(o, needed);
  if (!ids_or.ok()) {
    std::fprintf(stderr, "policy_bench: %s\n", ids_or.status().ToString().c_str());
    return 1;
  }
  const std::vector<int64_t>& ids = *ids_or;
  const double tokenize_s = NowS() - t_tok;
  for (int64_t id : ids) {
    if (id >= cfg.vocab_size) {
      std::fprintf(stderr, "policy_bench: token id %lld is outside the model's vocabulary (%lld); "
                   "wrong --tokenizer for this model?\n", static_cast<long long>(id),
                   static_cast<long long>(cfg.vocab_size));
      return 1;
    }
  }
  const std::vector<int64_t> ppl_ids(ids.begin(), ids.begin() + o.ppl_tokens);
  const std::vector<int64_t> prompt(ids.begin(), ids.begin() + o.prompt);

  std::string command = argv[0];
  for (int i = 1; i < argc; ++i) absl::StrAppend(&command, " ", argv[i]);
  std::printf("policy_bench: %s (%lld layers, %lld heads x %lld, vocab %lld), float32 on CPU, "
              "%d threads, LibTorch %s\n",
              o.model_dir.c_str(), static_cast<long long>(cfg.num_layers),
              static_cast<long long>(cfg.num_heads), static_cast<long long>(cfg.head_dim()),
              static_cast<long long>(cfg.vocab_size), at::get_num_threads(), TORCH_VERSION);
  std::printf("command: %s\n", command.c_str());
  std::printf("text: %s, tokenizer %s (%lld ids used, tokenised in %.1f s)\n", o.text.c_str(),
              o.tokenizer.c_str(), static_cast<long long>(ids.size()), tokenize_s);
  const int64_t max_length = std::min<int64_t>(2048, cfg.max_position_embeddings);
  std::printf("sliding: first %lld tokens, max_length %lld, stride 512 (N = %lld scored). "
              "streaming: first %lld tokens (N = %lld scored), scorers' decoding variant "
              "interval=%lld. prefill: %lld segment(s) of %lld context + %lld continuation "
              "(N = %lld scored).\n",
              static_cast<long long>(o.ppl_tokens), static_cast<long long>(max_length),
              static_cast<long long>(o.ppl_tokens - 1), static_cast<long long>(o.ppl_tokens),
              static_cast<long long>(o.ppl_tokens - 1), static_cast<long long>(o.interval),
              static_cast<long long>(o.prefill_segments), static_cast<long long>(o.context),
              static_cast<long long>(o.continuation),
              static_cast<long long>(o.prefill_segments * o.continuation));
  std::printf("generation: %lld-token prompt + %lld new tokens, greedy, EOS ignored, batch 1, "
              "%lld timed repeats (N) after %lld warm-up.\n\n",
              static_cast<long long>(o.prompt), static_cast<long long>(o.new_tokens),
              static_cast<long long>(o.repeats), static_cast<long long>(o.warmup));
  std::fflush(stdout);

  // Rows: full once, then every other schema policy at every budget; each per KV storage type.
  struct Planned {
    std::string name;
    int64_t budget;  // 0 for full
    KvDtype kv;
  };
  std::vector<Planned> plan;
  for (const PolicySchema& s : AllPolicySchemas()) {
    if (!o.policies.empty() && !o.policies.count(s.name)) continue;
    for (const KvDtype& kv : o.kv_dtypes) {
      if (s.name == "full") {
        plan.push_back({"full", 0, kv});
        continue;
      }
      for (int64_t B : o.budgets) plan.push_back({s.name, B, kv});
    }
  }
  for (const std::string& name : o.policies) {
    if (FindPolicySchema(name) == nullptr) {
      std::fprintf(stderr, "policy_bench: unknown policy '%s' in --policies\n", name.c_str());
      return 2;
    }
  }

  std::vector<Row> rows;
  const double t_all = NowS();
  for (size_t i = 0; i < plan.size(); ++i) {
    const auto& [name, B, kv] = plan[i];
    Row row;
    row.kv = kv;
    row.mode = kv.quantized() ? PositionMode::kOriginal : ModeFor(name);
    absl::StatusOr<std::string> streaming_or = name == "full" ? "full" : SpecFor(name, B, o.interval, true);
    absl::StatusOr<std::string> prefill_or = name == "full" ? "full" : SpecFor(name, B, o.interval, false);
    if (!streaming_or.ok() || !prefill_or.ok()) {
      std::fprintf(stderr, "policy_bench: %s at budget %lld: %s\n", name.c_str(), static_cast<long long>(B),
                   (!streaming_or.ok() ? streaming_or.status() : prefill_or.status()).ToString().c_str());
      return 1;
    }
    const std::string streaming_text = *streaming_or, prefill_text = *prefill_or;
    auto streaming_spec = ParsePolicySpec(streaming_text);
    auto prefill_spec = ParsePolicySpec(prefill_text);
    row.spec = streaming_text;
    row.prefill_spec = prefill_text;
    const double t_row = NowS();
    auto note = [&](const std::string& what, const absl::Status& st) {
      row.errors.push_back(absl::StrCat(what, ": ", st.ToString()));
      std::fprintf(stderr, "policy_bench: %s %s: %s\n", row.spec.c_str(), what.c_str(), st.ToString().c_str());
    };
    if (name == "full" && !kv.quantized()) {
      PerplexityOptions po;
      po.protocol = "sliding";
      po.max_length = max_length;
      po.stride = std::min<int64_t>(512, max_length);
      auto r = RunPerplexity(model, ppl_ids, *prefill_spec, po);
      if (r.ok()) row.sliding_ppl = r->Value(metric::kPpl); else note("sliding", r.status());
    }
    if (WhyPolicyCannotRunProtocol(*streaming_spec, "streaming").empty()) {
      PerplexityOptions po;
      po.protocol = "streaming";
      po.max_tokens = o.ppl_tokens;
      po.position_mode = row.mode;
      po.kv_dtype = kv;
      po.keep_nll_samples = false;
      auto r = RunPerplexity(model, ppl_ids, *streaming_spec, po);
      if (r.ok()) {
        row.streaming_ppl = r->Value(metric::kPpl);
        row.kv_tokens_max = r->Value(metric::kKvTokensMax);
        row.kv_bytes_peak = r->Value(metric::kKvBytesPeak);
        row.scoring_ms_per_token = r->Value(metric::kScoringMs) / std::max(1.0, r->Value(metric::kScoredTokens));
      } else {
        note("streaming", r.status());
      }
    }
    {
      PerplexityOptions po;
      po.protocol = "prefill";
      po.max_tokens = prefill_tokens;
      po.context_tokens = o.context;
      po.continuation_tokens = o.continuation;
      po.position_mode = row.mode;
      po.kv_dtype = kv;
      po.keep_nll_samples = false;
      auto r = RunPerplexity(model, ids, *prefill_spec, po);
      if (r.ok()) row.prefill_ppl = r->Value(metric::kPpl); else note("prefill", r.status());
    }
    std::fprintf(stderr, "[%zu/%zu] %s (%s): %.1f s (total %.1f s)\n", i + 1, plan.size(),
                 row.spec.c_str(), PositionModeName(row.mode), NowS() - t_row, NowS() - t_all);
    rows.push_back(std::move(row));
  }

  // Generation timing, interleaved (metrics.md: compare only what is measured in the same run,
  // interleaved): round r runs every policy once, so a slow spell of the machine hits every row
  // alike instead of the rows that happened to run during it. The first --warmup rounds are
  // discarded. Generation decodes token by token: the prefill-only scorers compress the prompt
  // once (their prefill spec); the per-step policies act every step.
  for (int64_t round = 0; round < o.warmup + o.repeats; ++round) {
    const double t_round = NowS();
    for (Row& row : rows) {
      auto spec = ParsePolicySpec(row.prefill_spec);
      GenerationTimingOptions go;
      go.new_tokens = o.new_tokens;
      go.repeats = 1;
      go.warmup = 1;  // the call returns the heap first: a warm-up takes the first-touch faults
      go.position_mode = row.mode;
      go.kv_dtype = row.kv;
      auto r = RunGenerationTiming(model, prompt, *spec, go);
      if (!r.ok()) {
        if (round == 0) row.errors.push_back(absl::StrCat("generation: ", r.status().ToString()));
        continue;
      }
      if (round < o.warmup) continue;
      for (double v : r->SamplesOf(metric::kTtftMs)) row.ttft.push_back(v);
      for (double v : r->SamplesOf(metric::kTpotMs)) row.tpot.push_back(v);
      row.gen_kv_peak = r->Value(metric::kKvBytesPeak);
      row.gen_kv_end = r->Value(metric::kKvBytesEnd);
      row.gen_kv_live_end = r->Value(metric::kKvBytesLiveEnd);
      row.gen_kv_tokens_max = r->Value(metric::kKvTokensMax);
    }
    std::fprintf(stderr, "generation round %lld/%lld%s: %.1f s\n", static_cast<long long>(round + 1),
                 static_cast<long long>(o.warmup + o.repeats), round < o.warmup ? " (warm-up)" : "",
                 NowS() - t_round);
  }

  double full_tpot = std::numeric_limits<double>::quiet_NaN();
  for (const Row& r : rows) {
    if (r.spec == "full" && !r.kv.quantized()) full_tpot = Median(r.tpot);
  }
  constexpr double kMiB = 1024.0 * 1024.0;
  std::printf("| policy spec | sliding PPL | streaming PPL | prefill PPL | kv_tokens_max | KV MiB peak "
              "| TTFT ms (median [p10–p90]) | TPOT ms | scoring ms/token | Δ TPOT vs full %% |\n");
  std::printf("| --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: |\n");
  for (const Row& r : rows) {
    const std::string spec = Label(r);
    const double tpot = r.tpot.empty() ? std::numeric_limits<double>::quiet_NaN() : Median(r.tpot);
    const std::string ttft =
        r.ttft.empty() ? "—"
                       : absl::StrCat(Num(Median(r.ttft), 2), " [", Num(Quantile(r.ttft, 0.1), 2), "–",
                                      Num(Quantile(r.ttft, 0.9), 2), "]");
    const std::string delta =
        r.spec == "full" && !r.kv.quantized() ? "0" : Num(100.0 * (tpot - full_tpot) / full_tpot, 1);
    std::printf("| %s | %s | %s | %s | %s | %s | %s | %s | %s | %s |\n", spec.c_str(),
                Ppl(r.sliding_ppl).c_str(), Ppl(r.streaming_ppl).c_str(), Ppl(r.prefill_ppl).c_str(),
                Num(r.kv_tokens_max, 0).c_str(), Num(r.kv_bytes_peak / kMiB, 2).c_str(), ttft.c_str(),
                Num(tpot, 2).c_str(), Num(r.scoring_ms_per_token, 3).c_str(), delta.c_str());
  }
  std::printf("\nkv_tokens_max, KV MiB peak and scoring ms/token come from the streaming run (the "
              "largest n a layer attended to; the K+V storage allocated at its largest; policy "
              "scoring + eviction time per streamed token). TTFT/TPOT: generation, median over "
              "N = %lld repeats, p10–p90 interpolated; Δ TPOT against the full row of this run. "
              "MiB = 2^20 bytes.\n\n",
              static_cast<long long>(o.repeats));

  std::printf("| policy spec | generation kv_tokens_max | generation KV MiB peak | generation KV MiB end | entries' KV MiB end |\n");
  std::printf("| --- | ---: | ---: | ---: | ---: |\n");
  for (const Row& r : rows) {
    std::printf("| %s | %s | %s | %s | %s |\n", Label(r).c_str(), Num(r.gen_kv_tokens_max, 0).c_str(),
                Num(r.gen_kv_peak / kMiB, 2).c_str(), Num(r.gen_kv_end / kMiB, 2).c_str(),
                Num(r.gen_kv_live_end / kMiB, 2).c_str());
  }
  std::printf("\nThe full cache reserves prompt + new tokens slots per layer up front. A compressing "
              "policy's cache is sized for the prompt and compressed right after each layer's "
              "attention, so its peak is the prompt's storage and its end value what the policy "
              "keeps (allocated capacity, growth slack included). The entries' KV is what the held entries "
              "take without growth slack or holes (kv_bytes_live_end): adakv's heads keep uneven "
              "counts in storage padded to the widest head, so its end value exceeds its entries'.\n");
  size_t failed = 0;
  for (const Row& r : rows) failed += r.errors.size();
  if (failed > 0) {
    std::printf("\n%zu run(s) failed:\n", failed);
    for (const Row& r : rows) for (const auto& e : r.errors) std::printf("- %s: %s\n", r.spec.c_str(), e.c_str());
  }
  std::printf("\ntotal %.1f s\n", NowS() - t_all);
  return failed > 0 ? 1 : 0;
}

}  // namespace
}  // namespace kvgrid

int main(int argc, char** argv) {
  kvgrid::EnsureBlasUsesCpuFeatures(argv);
  kvgrid::RetainFreedMemoryForReuse();
  return kvgrid::Main(argc, argv);
}
