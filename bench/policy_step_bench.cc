// policy_step_bench: what one per-step policy decision costs on its own — SelectKeep for one layer
// of a decode step that evicts one entry per head, on a synthetic layer (8 heads, n live slots in
// a shuffled slot order, random statistics), hot in the CPU caches. A program, not a test:
//
//   build/bench/policy_step_bench [--slots 513] [--iters 20000] [--repeats 5]
//
// It isolates the policy's own work from what long_context_bench's "evict ms/tok" also holds
// (building the view, the cache's eviction, and memory traffic after the weights flushed the
// caches). Prints N, median and min–max of µs per call over the repeats.
#include <torch/torch.h>

#include <algorithm>
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <numeric>
#include <random>
#include <string>
#include <vector>

#include "core/policy_spec.h"
#include "model/engine/kv_policy.h"

namespace kvgrid {
namespace {

constexpr int64_t kHeads = 8;

// Microseconds per SelectKeep, one value per repeat.
std::vector<double> Time(const std::string& text, int64_t n, int64_t iters, int64_t repeats) {
  auto policy = MakePolicy(*ParsePolicySpec(text)).value();
  policy->Reset(1);
  std::vector<std::vector<int64_t>> rank(kHeads, std::vector<int64_t>(n));
  std::mt19937 rng(1);
  for (auto& r : rank) {
    std::iota(r.begin(), r.end(), 0);
    std::shuffle(r.begin(), r.end(), rng);
  }
  LayerView prefill;  // n - 1 entries first, so every timed call holds n and evicts one
  prefill.num_layers = 1;
  prefill.n = prefill.new_tokens = n - 1;
  prefill.tokens_seen = prefill.prompt_length = n - 1;
  prefill.keys = torch::zeros({1, kHeads, n - 1, 64});
  prefill.new_keys = torch::randn({1, kHeads, n - 1, 64});
  prefill.positions = torch::zeros({1, kHeads, n - 1}, torch::kLong);
  prefill.received = torch::rand({1, kHeads, n - 1}, torch::kDouble);
  prefill.probs = torch::rand({1, kHeads, 1, n - 1});
  policy->SelectKeep(prefill);

  LayerView step;
  step.num_layers = 1;
  step.n = n;
  step.new_tokens = 1;
  step.tokens_seen = 4 * n;
  step.prompt_length = n - 1;
  step.phase = ForwardPhase::kDecode;
  step.keys = torch::zeros({1, kHeads, n, 64});
  step.new_keys = torch::randn({1, kHeads, 1, 64});
  step.positions = torch::zeros({1, kHeads, n}, torch::kLong);
  step.probs = torch::rand({1, kHeads, 1, n});  // a decode step's one row (no `received`)
  step.slot_rank = &rank;
  std::vector<double> us;
  for (int64_t r = 0; r < repeats; ++r) {
    const auto t0 = std::chrono::steady_clock::now();
    for (int64_t i = 0; i < iters; ++i) {
      const torch::Tensor keep = policy->SelectKeep(step);
      if (!keep.defined() || keep.size(2) != n - 1) {
        std::fprintf(stderr, "policy_step_bench: %s did not evict one entry\n", text.c_str());
        std::exit(1);
      }
    }
    const auto t1 = std::chrono::steady_clock::now();
    us.push_back(std::chrono::duration<double, std::micro>(t1 - t0).count() / iters);
  }
  return us;
}

int Main(int argc, char** argv) {
  int64_t n = 513, iters = 20000, repeats = 5;
  for (int i = 1; i + 1 < argc; i += 2) {
    const std::string a = argv[i];
    const int64_t v = std::atoll(argv[i + 1]);
    if (v < 2) { std::fprintf(stderr, "policy_step_bench: %s needs an integer >= 2\n", a.c_str()); return 2; }
    if (a == "--slots") n = v;
    else if (a == "--iters") iters = v;
    else if (a == "--repeats") repeats = v;
    else { std::fprintf(stderr, "policy_step_bench: unknown flag %s\n", a.c_str()); return 2; }
  }
  const int64_t b = n - 1;
  std::printf("policy_step_bench: one layer, %lld heads, %lld slots (shuffled slot order), one "
              "eviction per head per call; %lld calls per repeat\n\n",
              static_cast<long long>(kHeads), static_cast<long long>(n),
              static_cast<long long>(iters));
  std::printf("| policy | N | µs per call (median) | min–max |\n| --- | ---: | ---: | ---: |\n");
  const std::vector<std::string> specs = {
      "h2o:heavy=" + std::to_string(b / 2) + ",recent=" + std::to_string(b - b / 2),
      "tova:cache_size=" + std::to_string(b), "knorm:budget=" + std::to_string(b)};
  for (const std::string& text : specs) {
    std::vector<double> us = Time(text, n, iters, repeats);
    std::sort(us.begin(), us.end());
    std::printf("| %s | %lld | %.2f | %.2f–%.2f |\n", text.c_str(), static_cast<long long>(us.size()),
                us[us.size() / 2], us.front(), us.back());
  }
  return 0;
}

}  // namespace
}  // namespace kvgrid

int main(int argc, char** argv) { return kvgrid::Main(argc, argv); }
