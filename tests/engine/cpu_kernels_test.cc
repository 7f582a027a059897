// The CPU kernels of the batch-1 paths (model/engine/cpu_gemv.h) against plain LibTorch, at the
// sizes the fixtures do not reach: Pythia-70M's head_dim 64, sizes that are not multiples of the
// vector width, and every weight dtype.
#include <gtest/gtest.h>
#include <torch/torch.h>

#include "model/engine/cpu_gemv.h"

namespace kvgrid {
namespace {

TEST(CpuGemv, MatchesTorchForEveryWeightDtypeAndOddSizes) {
  torch::manual_seed(1);
  for (torch::ScalarType dtype : {torch::kFloat32, torch::kFloat16, torch::kBFloat16}) {
    for (int64_t in : {1, 7, 64, 100, 512}) {
      for (int64_t out : {1, 33, 300}) {
        SCOPED_TRACE(testing::Message() << c10::toString(dtype) << " " << out << "x" << in);
        torch::Tensor w = torch::randn({out, in}).to(dtype);
        torch::Tensor x = torch::randn({in});
        torch::Tensor b = torch::randn({out});
        torch::Tensor want = torch::mv(w.to(torch::kFloat32), x) + b;
        EXPECT_LT((CpuGemv(w, x, b) - want).abs().max().item<double>(), 1e-4 * std::sqrt(in));
        EXPECT_LT((CpuGemv(w, x, torch::Tensor()) - (want - b)).abs().max().item<double>(), 1e-4 * std::sqrt(in));
      }
    }
  }
}

TEST(CpuAttentionKernels, ScoresAndWeightedSumMatchTorch) {
  torch::manual_seed(2);
  for (int64_t d : {8, 16, 64, 72, 128}) {
    for (int64_t n : {1, 5, 640}) {
      SCOPED_TRACE(testing::Message() << "d=" << d << " n=" << n);
      torch::Tensor q = torch::randn({d});
      torch::Tensor K = torch::randn({n, d});
      torch::Tensor V = torch::randn({n, d});
      const float scale = 0.125f;
      torch::Tensor scores = torch::empty({n});
      AttentionScoresF32(q.data_ptr<float>(), K.data_ptr<float>(), n, d, scale, scores.data_ptr<float>());
      EXPECT_LT((scores - torch::mv(K, q) * scale).abs().max().item<double>(), 1e-5 * d);
      torch::Tensor p = torch::softmax(scores, 0);
      torch::Tensor out = torch::full({d}, 123.0f);  // must be overwritten, not accumulated into
      AttentionWeightedSumF32(p.data_ptr<float>(), V.data_ptr<float>(), n, d, out.data_ptr<float>());
      EXPECT_LT((out - torch::mv(V.t(), p)).abs().max().item<double>(), 1e-5);
    }
  }
}

}  // namespace
}  // namespace kvgrid
