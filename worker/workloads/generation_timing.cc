#include "worker/workloads/generation_timing.h"

#include <algorithm>
#include <chrono>
#include <cmath>
#include <cstdlib>
#include <thread>

#include "absl/strings/str_cat.h"
#include "common/cpu_wait.h"
#include "common/malloc_tuning.h"
#include "common/paired_delta.h"
#include "common/status_macros.h"
#include "model/engine/generate.h"
#include "model/engine/kv_policy.h"
#include "worker/workloads/memory_probe.h"

namespace kvgrid {
namespace {

using Clock = std::chrono::steady_clock;

double Ms(Clock::time_point a, Clock::time_point b) {
  return std::chrono::duration<double, std::milli>(b - a).count();
}

struct OneRun {
  double ttft_ms = 0, total_ms = 0, tpot_ms = 0, scoring_ms = 0, decode_scoring_ms = 0;
  double cpu_wait_ms = 0;  // run-queue delay of the process's threads during the generation
  std::vector<double> step_ms;
  MemoryPeak prefill_peak, decode_peak;
  int64_t kv_peak = 0, kv_end = 0, kv_live_end = 0, kv_tokens_max = 0;
};

// The share of a generation's wall time its threads spent waiting for a CPU.
double CpuWaitShare(const OneRun& run) { return run.cpu_wait_ms / std::max(run.total_ms, 1e-3); }

double ContentionWaitSeconds(double option) {
  if (option >= 0) return option;
  if (const char* env = std::getenv("KVGRID_CONTENTION_WAIT_S")) {
    char* end = nullptr;
    const double v = std::strtod(env, &end);
    if (end != env && *end == '\0' && std::isfinite(v) && v >= 0) return v;
  }
  return 120;
}

}  // namespace

double Median(std::vector<double> v) {
  if (v.empty()) return 0;
  std::sort(v.begin(), v.end());
  size_t n = v.size();
  return n % 2 ? v[n / 2] : 0.5 * (v[n / 2 - 1] + v[n / 2]);
}

absl::StatusOr<RunResult> RunGenerationTiming(GptNeoxModel& model, const std::vector<int64_t>& prompt,
                                              const PolicySpec& spec,
                                              const GenerationTimingOptions& o) {
  if (prompt.empty()) return absl::InvalidArgumentError("generation: empty prompt");
  if (o.new_tokens < 1) return absl::InvalidArgumentError("generation: new_tokens must be >= 1");
  if (o.batch < 1) return absl::InvalidArgumentError("generation: batch must be >= 1");
  if (spec.name != "full" && o.batch > 1) {
    return absl::UnimplementedError("KV policies other than 'full' run at batch 1 only");
  }
  MemoryProbe probe(model.device());
  // Run-queue delay now, or 0 where the kernel does not report it (the guard then never fires;
  // the environment says so).
  const std::function<double()> run_queue_wait_ms =
      o.run_queue_wait_ms ? o.run_queue_wait_ms : [] { return ProcessRunQueueWaitMs().value_or(0.0); };
  std::vector<std::vector<int64_t>> prompts(o.batch, prompt);
  SamplingParams sp;
  sp.greedy = true;
  sp.ignore_eos = true;
  sp.max_new_tokens = o.new_tokens;
  sp.prefill_chunk = o.prefill_chunk;
  sp.kv_dtype = o.kv_dtype;
  PolicySpec full;
  full.name = "full";

  // One generation with `spec`'s policy, timed.
  // One generation: the run's policy and kv_dtype, or (baseline) the full float cache.
  auto time_one = [&](bool baseline) -> absl::StatusOr<OneRun> {
    const PolicySpec& which = baseline ? full : spec;
    SamplingParams side = sp;
    if (baseline) side.kv_dtype = KvDtype{};
    std::unique_ptr<KvPolicy> policy;
    if (which.name != "full") {
      ASSIGN_OR_RETURN(policy, MakePolicy(which));
      policy->Reset(model.config().num_layers);
    }
    OneRun run;
    std::vector<Clock::time_point> marks;
    marks.reserve(o.new_tokens);
    MemoryProbe::Synchronize(model.device());
    probe.ResetPeak();
    const double wait_before = run_queue_wait_ms();
    const auto start = Clock::now();
    auto on_step = [&](int64_t step) {
      // The token id of `step` is on the host here (Generate copies it), so the device is idle.
      marks.push_back(Clock::now());
      if (step == 0) {
        run.prefill_peak = probe.ReadPeak();
        probe.ResetPeak();
        marks.back() = Clock::now();  // the probe's reads are not part of decode
      }
    };
    ASSIGN_OR_RETURN(GenerationOutput out, Generate(model, prompts, side, policy.get(), o.position_mode, on_step));
    run.cpu_wait_ms = std::max(0.0, run_queue_wait_ms() - wait_before);
    run.decode_peak = probe.ReadPeak();
    if (static_cast<int64_t>(marks.size()) != o.new_tokens) {
      return absl::InternalError("generation stopped early although EOS is ignored");
    }
    run.ttft_ms = Ms(start, marks.front());
    run.total_ms = Ms(start, marks.back());
    for (size_t i = 1; i < marks.size(); ++i) run.step_ms.push_back(Ms(marks[i - 1], marks[i]));
    run.tpot_ms = o.new_tokens > 1 ? Ms(marks.front(), marks.back()) / (o.new_tokens - 1) : 0;
    run.scoring_ms = out.stats.policy_ms;
    run.decode_scoring_ms = out.stats.policy_ms - out.prefill_policy_ms;
    run.kv_peak = out.kv_bytes_peak;
    run.kv_end = out.kv_bytes_end;
    run.kv_live_end = out.kv_bytes_live_end;
    run.kv_tokens_max = out.stats.kv_tokens_max;
    return run;
  };

  const bool paired = o.paired_baseline && (spec.name != "full" || o.kv_dtype.quantized());
  // Free memory an earlier run left in the heap (RetainFreedMemoryForReuse) goes back to the
  // kernel first, so this run's peak RSS counts this run's memory. Once, not per repetition:
  // warm-ups leave the heap holding this run's own activations, as in any steady-state
  // measurement (returning it before every generation would add first-touch page faults to
  // every TTFT: +65 % at 1024 tokens on the development VM).
  ReleaseRetainedMemory();
  // One round: the policy's generation, and with a paired baseline the full cache's beside it.
  // Paired rounds alternate which side goes first (the policy on even repeats).
  struct Round {
    std::vector<OneRun> sides;  // [policy] or [policy, baseline]
    double cpu_wait_share = 0;  // the largest side's run-queue delay / its wall time
  };
  auto time_round = [&](int64_t rep) -> absl::StatusOr<Round> {
    Round round;
    round.sides.resize(paired ? 2 : 1);
    const bool baseline_first = paired && rep % 2 == 1;
    for (int i = 0; i < static_cast<int>(round.sides.size()); ++i) {
      const bool is_baseline = paired && (i == 0) == baseline_first;
      ASSIGN_OR_RETURN(OneRun run, time_one(is_baseline));
      round.cpu_wait_share = std::max(round.cpu_wait_share, CpuWaitShare(run));
      round.sides[is_baseline ? 1 : 0] = std::move(run);
    }
    return round;
  };
  auto disturbed = [&](double cpu_wait_share) { return cpu_wait_share > o.max_cpu_wait_share; };

  const double guard_budget_s = ContentionWaitSeconds(o.contention_wait_s);
  double guard_spent_s = 0;
  int64_t retimed = 0, kept_disturbed = 0;
  std::vector<OneRun> runs, baseline;
  std::vector<double> cpu_wait_pct;
  // Rounds are numbered across warm-ups and timed repeats, so the sides keep alternating.
  for (int64_t rep = 0; rep < o.warmup; ++rep) RETURN_IF_ERROR(time_round(rep).status());
  for (int64_t rep = o.warmup; rep < o.warmup + o.repeats; ++rep) {
    ASSIGN_OR_RETURN(Round round, time_round(rep));
    // The contention guard: another program kept this round's threads waiting for a CPU.
    double pause_s = 0.25;
    while (disturbed(round.cpu_wait_share) && guard_spent_s < guard_budget_s) {
      const auto guard_start = Clock::now();
      bool quiet = false;
      auto left_s = [&] { return guard_budget_s - guard_spent_s - Ms(guard_start, Clock::now()) / 1000.0; };
      while (!quiet && left_s() > 0) {
        std::this_thread::sleep_for(std::chrono::duration<double>(std::min(pause_s, left_s())));
        pause_s = std::min(2 * pause_s, 4.0);
        ASSIGN_OR_RETURN(OneRun probe_run, time_one(false));  // untimed: is the machine quiet?
        quiet = !disturbed(CpuWaitShare(probe_run));
      }
      if (quiet) {  // may end past the budget by this round's own time
        ASSIGN_OR_RETURN(round, time_round(rep));
        ++retimed;
      }
      guard_spent_s += Ms(guard_start, Clock::now()) / 1000.0;
    }
    if (disturbed(round.cpu_wait_share)) ++kept_disturbed;
    cpu_wait_pct.push_back(100.0 * round.cpu_wait_share);
    runs.push_back(std::move(round.sides[0]));
    if (paired) baseline.push_back(std::move(round.sides[1]));
  }
  // Paired: the heap now also holds what the full cache's runs freed, which would count in the
  // policy's peak RSS. Its memory is measured by one more generation after returning that to the
  // kernel (its timings are not used).
  std::vector<OneRun> memory_runs;
  if (paired) {
    ReleaseRetainedMemory();
    ASSIGN_OR_RETURN(OneRun run, time_one(false));
    memory_runs.push_back(std::move(run));
  }
  const std::vector<OneRun>& memory = paired ? memory_runs : runs;

  RunResult r;
  std::vector<double> ttft, tpot, thr, total_thr, prefill_thr, scoring, decode_scoring, steps, peak, reserved,
      prefill_peak, decode_peak;
  const double B = static_cast<double>(o.batch), P = static_cast<double>(prompt.size()),
               N = static_cast<double>(o.new_tokens);
  for (const auto& run : runs) {
    ttft.push_back(run.ttft_ms);
    tpot.push_back(run.tpot_ms);
    thr.push_back(B * N / (run.total_ms / 1000.0));
    total_thr.push_back(B * (P + N) / (run.total_ms / 1000.0));
    prefill_thr.push_back(B * P / (run.ttft_ms / 1000.0));
    scoring.push_back(run.scoring_ms);
    decode_scoring.push_back(run.decode_scoring_ms);
    steps.insert(steps.end(), run.step_ms.begin(), run.step_ms.end());
  }
  for (const auto& run : memory) {
    bool cuda = run.prefill_peak.allocated >= 0;
    double pp = cuda ? run.prefill_peak.allocated : run.prefill_peak.rss;
    double dp = cuda ? run.decode_peak.allocated : run.decode_peak.rss;
    prefill_peak.push_back(pp);
    decode_peak.push_back(dp);
    peak.push_back(std::max(pp, dp));
    if (cuda) reserved.push_back(std::max(run.prefill_peak.reserved, run.decode_peak.reserved));
  }
  const bool cuda = !reserved.empty();
  r.Add(metric::kTtftMs, Median(ttft));
  r.Add(metric::kTpotMs, Median(tpot));
  r.Add(metric::kThroughputTokS, Median(thr));
  r.Add(metric::kTotalThroughputTokS, Median(total_thr));
  r.Add(metric::kPrefillTokS, Median(prefill_thr));
  r.Add(metric::kPeakMemoryBytes, Median(peak));
  r.Add(cuda ? metric::kPrefillPeakAllocatedBytes : metric::kPrefillPeakRssBytes, Median(prefill_peak));
  r.Add(cuda ? metric::kDecodePeakAllocatedBytes : metric::kDecodePeakRssBytes, Median(decode_peak));
  if (cuda) r.Add(metric::kPeakReservedBytes, Median(reserved));
  r.Add(metric::kKvBytesPeak, static_cast<double>(runs.back().kv_peak));
  r.Add(metric::kKvBytesEnd, static_cast<double>(runs.back().kv_end));
  r.Add(metric::kKvBytesLiveEnd, static_cast<double>(runs.back().kv_live_end));
  r.Add(metric::kKvTokensMax, static_cast<double>(runs.back().kv_tokens_max));
  r.Add(metric::kScoringMs, Median(scoring));
  r.Add(metric::kDecodeScoringMs, Median(decode_scoring));
  r.Add(metric::kRepeats, static_cast<double>(runs.size()));
  r.Add(metric::kCpuWaitPct, Median(cpu_wait_pct));
  r.Add(metric::kRetimedRepeats, static_cast<double>(retimed));
  r.Add(metric::kDisturbedRepeats, static_cast<double>(kept_disturbed));
  r.AddSamples(metric::kCpuWaitPct, cpu_wait_pct);
  r.AddSamples(metric::kTtftMs, ttft);
  r.AddSamples(metric::kTpotMs, tpot);
  r.AddSamples(metric::kThroughputTokS, thr);
  r.AddSamples(metric::kScoringMs, scoring);
  r.AddSamples(metric::kDecodeStepMs, steps);
  if (paired) {
    std::vector<double> base_ttft, base_tpot, base_thr;
    for (const auto& run : baseline) {
      base_ttft.push_back(run.ttft_ms);
      base_tpot.push_back(run.tpot_ms);
      base_thr.push_back(B * N / (run.total_ms / 1000.0));
    }
    r.Add(metric::kBaselineTtftMs, Median(base_ttft));
    r.Add(metric::kBaselineTpotMs, Median(base_tpot));
    r.Add(metric::kBaselineThroughputTokS, Median(base_thr));
    auto add_delta = [&](const MetricDef& delta, const std::vector<double>& a,
                         const std::vector<double>& b) {
      const PairedDelta d = PairedRatioDelta(a, b);
      r.Add(delta, d.pct);
      r.AddMetric(CiLowName(delta), d.ci_low, std::string(delta.unit));
      r.AddMetric(CiHighName(delta), d.ci_high, std::string(delta.unit));
    };
    add_delta(metric::kDeltaTtftPct, ttft, base_ttft);
    add_delta(metric::kDeltaTpotPct, tpot, base_tpot);
    add_delta(metric::kDeltaThroughputPct, thr, base_thr);
    r.AddSamples(metric::kBaselineTtftMs, base_ttft);
    r.AddSamples(metric::kBaselineTpotMs, base_tpot);
    r.AddSamples(metric::kBaselineThroughputTokS, base_thr);
    r.environment["paired_baseline"] =
        "full cache timed in the same process, interleaved repeat by repeat (sides alternate "
        "which goes first); delta = geometric mean of the paired ratios, 95 % paired t interval";
  }
  r.environment["contention_guard"] =
      !o.run_queue_wait_ms && !ProcessRunQueueWaitMs().ok()
          ? "unavailable (no /proc/self/task/*/schedstat): repeats timed as they came"
      : guard_budget_s > 0
          ? absl::StrCat("a repeat whose threads waited for a CPU over ", 100 * o.max_cpu_wait_share,
                         " % of its wall time is re-timed once the machine is quiet, for up to ",
                         guard_budget_s, " s per run")
          : "off (KVGRID_CONTENTION_WAIT_S=0): repeats timed as they came";
  r.environment["memory_metric"] = cuda ? "cuda peak allocated (caching allocator), reset per phase"
                                        : "process peak RSS (VmHWM), reset per phase";
  return r;
}

}  // namespace kvgrid
