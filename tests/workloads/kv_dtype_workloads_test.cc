// The kv_dtype axis in the workloads: what each perplexity protocol computes with a KIVI cache
// (sliding = the float cache by the method's definition; streaming and prefill attend to the
// quantised entries), KV bytes counting the packed storage, and generation timing's paired
// baseline being the float full cache.
#include <gtest/gtest.h>
#include <torch/torch.h>

#include <memory>
#include <string>
#include <vector>

#include "core/kv_dtype.h"
#include "core/metric_catalog.h"
#include "core/policy_spec.h"
#include "model/engine/gpt_neox.h"
#include "tests/workloads/workload_test_util.h"
#include "worker/workloads/generation_timing.h"
#include "worker/workloads/perplexity.h"

namespace kvgrid {
namespace {

using workload_test::kPythiaLike;
using workload_test::Model;

std::vector<int64_t> Ids(int64_t n) {
  std::vector<int64_t> ids;
  for (int64_t i = 0; i < n; ++i) ids.push_back((i * 7919 + 13) % 50000);
  return ids;
}

RunResult Ppl(const std::string& protocol, const std::string& policy, const std::string& kv) {
  PerplexityOptions o;
  o.protocol = protocol;
  o.max_length = 64;
  o.stride = 32;
  o.context_tokens = 48;
  o.continuation_tokens = 24;
  o.kv_dtype = *ParseKvDtype(kv);
  auto r = RunPerplexity(Model(kPythiaLike), Ids(144), *ParsePolicySpec(policy), o);
  EXPECT_TRUE(r.ok()) << r.status();
  return *r;
}

TEST(KvDtypeWorkloads, EachProtocolSeesTheQuantisedCacheAsKiviDefinesIt) {
  const std::string int2 = "int2:group=8,residual=16";
  // Sliding: one forward per window, attention before anything is quantised.
  EXPECT_EQ(Ppl("sliding", "full", int2).Value(metric::kPpl), Ppl("sliding", "full", "model").Value(metric::kPpl));
  for (const char* protocol : {"streaming", "prefill"}) {
    for (const char* policy : {"full", "streaming_llm:sink_tokens=4,window=28"}) {
      RunResult fp = Ppl(protocol, policy, "model"), q = Ppl(protocol, policy, int2);
      EXPECT_NE(q.Value(metric::kPpl), fp.Value(metric::kPpl)) << protocol << " " << policy;
      EXPECT_LT(std::abs(std::log(q.Value(metric::kPpl) / fp.Value(metric::kPpl))), 1.0);
      EXPECT_LT(q.Value(metric::kKvBytesPeak), fp.Value(metric::kKvBytesPeak)) << protocol << " " << policy;
    }
  }
}

TEST(KvDtypeWorkloads, GenerationPairsAQuantisedFullCacheWithTheFloatOne) {
  GenerationTimingOptions o;
  o.new_tokens = 4;
  o.repeats = 2;
  o.warmup = 0;
  o.paired_baseline = true;
  o.contention_wait_s = 0;
  o.kv_dtype = *ParseKvDtype("int4:group=8,residual=16");
  auto ids = Ids(96);
  auto q = RunGenerationTiming(Model(kPythiaLike), ids, *ParsePolicySpec("full"), o);
  ASSERT_TRUE(q.ok()) << q.status();
  EXPECT_GT(q->Value(metric::kBaselineTpotMs), 0);  // the float full cache timed beside it
  o.kv_dtype = KvDtype{};
  o.paired_baseline = false;
  auto fp = RunGenerationTiming(Model(kPythiaLike), ids, *ParsePolicySpec("full"), o);
  ASSERT_TRUE(fp.ok()) << fp.status();
  // d = 16 and G = 8 make scales heavy here (48 B an entry and head against 128 B in float32).
  EXPECT_LT(q->Value(metric::kKvBytesEnd), fp->Value(metric::kKvBytesEnd) * 0.7);
}

}  // namespace
}  // namespace kvgrid
