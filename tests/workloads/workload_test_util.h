// Shared by the workload tests (tests/workloads/*_test.cc): the fixture models loaded once per
// test binary (float32, CPU, 2 threads), real Pythia ids of the wikitext-2 test text, and lookups
// of a RunResult's metrics and sample series that fail the test when the name is missing, and
// the check of a refusal's message.
#ifndef KVGRID_TESTS_WORKLOADS_WORKLOAD_TEST_UTIL_H_
#define KVGRID_TESTS_WORKLOADS_WORKLOAD_TEST_UTIL_H_

#include <gtest/gtest.h>
#include <torch/torch.h>

#include <algorithm>
#include <cstdlib>
#include <fstream>
#include <limits>
#include <map>
#include <memory>
#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "core/policy_spec.h"
#include "core/run_result.h"
#include "model/engine/gpt_neox.h"

namespace kvgrid::workload_test {

inline const std::string kFixtures = KVGRID_FIXTURES_DIR;
inline const std::string kPythiaLike = "tiny-neox-pythia-like";

class TwoThreads : public ::testing::Environment {
 public:
  void SetUp() override { torch::set_num_threads(2); }
};
inline ::testing::Environment* const kTwoThreads =
    ::testing::AddGlobalTestEnvironment(new TwoThreads);

// A fixture model under tests/fixtures/models (shared/fixtures/models), loaded on first use.
inline GptNeoxModel& Model(const std::string& name) {
  static std::map<std::string, std::unique_ptr<GptNeoxModel>> models;
  auto& slot = models[name];
  if (!slot) {
    auto m = GptNeoxModel::Load(kFixtures + "/models/" + name, torch::kFloat32, torch::kCPU);
    if (!m.ok()) {
      ADD_FAILURE() << m.status();
      std::abort();
    }
    slot = std::move(*m);
  }
  return *slot;
}

// The first n real Pythia ids of the wikitext-2 test text (tokenizer fixture).
inline std::vector<int64_t> TextIds(int64_t n) {
  static const std::vector<int64_t> all = [] {
    std::ifstream in(kFixtures + "/tokenizer/wikitext-20k.ids");
    std::vector<int64_t> v;
    int64_t id;
    while (in >> id) v.push_back(id);
    return v;
  }();
  EXPECT_LE(n, static_cast<int64_t>(all.size()));
  return std::vector<int64_t>(all.begin(), all.begin() + std::min<int64_t>(n, all.size()));
}

inline PolicySpec Spec(const std::string& text) {
  auto spec = ParsePolicySpec(text);
  EXPECT_TRUE(spec.ok()) << text << ": " << spec.status();
  return spec.ok() ? *spec : PolicySpec{"full", {}};
}

inline double Metric(const RunResult& r, const std::string& name) {
  const kvgrid::Metric* m = r.FindMetric(name);
  if (m == nullptr) {
    ADD_FAILURE() << "metric '" << name << "' missing";
    return std::numeric_limits<double>::quiet_NaN();
  }
  return m->value;
}

inline bool HasSamples(const RunResult& r, const std::string& name) {
  for (const auto& s : r.samples) {
    if (s.name == name) return true;
  }
  return false;
}

inline std::vector<double> Samples(const RunResult& r, const std::string& name) {
  for (const auto& s : r.samples) {
    if (s.name == name) return s.values;
  }
  ADD_FAILURE() << "sample series '" << name << "' missing";
  return {};
}

// A refusal: InvalidArgument whose message holds every needle (the field, value or file named).
inline void ExpectInvalid(const absl::StatusOr<RunResult>& r, const std::vector<std::string>& needles) {
  ASSERT_FALSE(r.ok());
  EXPECT_EQ(r.status().code(), absl::StatusCode::kInvalidArgument) << r.status();
  for (const auto& n : needles) {
    EXPECT_NE(std::string(r.status().message()).find(n), std::string::npos)
        << "'" << n << "' not in: " << r.status().message();
  }
}

}  // namespace kvgrid::workload_test

#endif  // KVGRID_TESTS_WORKLOADS_WORKLOAD_TEST_UTIL_H_
