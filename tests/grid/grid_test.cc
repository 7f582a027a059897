#include "coordinator/grid/grid.h"

#include <filesystem>
#include <fstream>
#include <iterator>
#include <set>
#include <string>

#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"

namespace kvgrid {
namespace {

using ::testing::HasSubstr;

// The grid from docs/design.md "Grid YAML".
constexpr const char* kDesignGrid = R"(name: policies-wikitext
model: {id: EleutherAI/pythia-70m-deduped, revision: main, dtype: float16}
device: cuda
repeats: 5
warmup: 2
datasets:
  - {name: wikitext-2-raw-v1, split: test}
  - {name: pg19, split: test, samples: 1}
workloads:
  perplexity: {protocol: streaming, max_tokens: 8192}
  generation: {prompt_tokens: [512, 2048], new_tokens: 128}
grid:
  policy:
    - {name: full}
    - {name: streaming_llm, sink_tokens: 4, window: [252, 508, 1020]}
    - {name: knorm, keep_ratio: [0.9, 0.8, 0.7], prune_after: 512, skip_layers: [[0]]}
    - {name: snapkv, budget: [256, 512], window: 32, kernel: 7, pooling: max}
)";

std::string ErrorOf(const std::string& yaml) {
  auto g = ParseGridYaml(yaml, "g.yaml");
  EXPECT_FALSE(g.ok()) << "parsed unexpectedly:\n" << yaml;
  if (g.ok()) return "";
  EXPECT_EQ(g.status().code(), absl::StatusCode::kInvalidArgument) << g.status();
  return std::string(g.status().message());
}

// A valid grid with `line` substituted for the policy list's body.
std::string WithPolicy(const std::string& entry) {
  return "name: t\ndatasets:\n  - {name: wikitext-2-raw-v1}\nworkloads:\n  generation: {}\n"
         "grid:\n  policy:\n    - " + entry + "\n";
}

TEST(GridTest, PointsThatCannotRunAreLeftOutWithTheReason) {
  auto g = ParseGridYaml(
      "name: t\ndatasets:\n  - {name: wikitext-2-raw-v1}\n"
      "workloads:\n  perplexity: {protocol: [sliding, streaming, prefill]}\n"
      "grid:\n  policy:\n    - full\n    - {name: streaming_llm, window: 60}\n"
      "    - {name: snapkv, budget: 64}\n    - {name: snapkv, budget: 64, interval: 16}\n",
      "g.yaml");
  ASSERT_TRUE(g.ok()) << g.status();
  std::multiset<std::string> points;
  for (const auto& r : g->runs) points.insert(r.policy.name + "/" + r.perplexity.protocol);
  // full: 3 protocols; streaming_llm: streaming + prefill; snapkv: prefill only; snapkv with an
  // interval: streaming + prefill.
  EXPECT_EQ(points, (std::multiset<std::string>{"full/sliding", "full/streaming", "full/prefill",
                                                "streaming_llm/streaming", "streaming_llm/prefill",
                                                "snapkv/prefill", "snapkv/streaming",
                                                "snapkv/prefill"}));
  ASSERT_EQ(g->skipped.size(), 2u);
  EXPECT_THAT(g->skipped[0] + g->skipped[1], HasSubstr("sliding protocol keeps no cache"));
  EXPECT_THAT(g->skipped[0] + g->skipped[1], HasSubstr("interval"));
  // A grid of which nothing can run is an error, not an empty experiment.
  EXPECT_THAT(ErrorOf("name: t\ndatasets:\n  - {name: wikitext-2-raw-v1}\n"
                      "workloads:\n  perplexity: {protocol: sliding}\n"
                      "grid:\n  policy:\n    - {name: tova, cache_size: 8}\n"),
              HasSubstr("no point of the grid can run"));
}

TEST(GridTest, ExpandsDesignExample) {
  auto g = ParseGridYaml(kDesignGrid, "design.yaml");
  ASSERT_TRUE(g.ok()) << g.status();
  EXPECT_EQ(g->name, "policies-wikitext");
  EXPECT_EQ(g->max_attempts, 3);
  // policies: 1 + 3 + 3 + 2 = 9; datasets 2; workloads: 1 perplexity + 2 generation = 3;
  // snapkv (prefill-only, no interval) x streaming x 2 datasets cannot run and is left out.
  EXPECT_EQ(g->runs.size(), 9u * 2u * 3u - 2u * 2u);
  ASSERT_EQ(g->skipped.size(), 1u);
  EXPECT_THAT(g->skipped[0], HasSubstr("4 point(s) left out: policy snapkv compresses only at prefill"));
  ASSERT_EQ(g->run_keys.size(), g->runs.size());
  std::set<std::string> keys(g->run_keys.begin(), g->run_keys.end());
  EXPECT_EQ(keys.size(), g->runs.size());
  std::set<std::string> policies;
  for (const auto& r : g->runs) {
    policies.insert(r.policy.ToString());
    EXPECT_EQ(r.model.dtype, "float16");
    EXPECT_EQ(r.device, "cuda");
    EXPECT_EQ(r.repeats, 5);
    EXPECT_EQ(r.warmup, 2);
  }
  EXPECT_EQ(policies.size(), 9u);
  EXPECT_TRUE(policies.count("streaming_llm:sink_tokens=4,window=508"));
  EXPECT_TRUE(policies.count("knorm:keep_ratio=0.8,prune_after=512,skip_layers=[0]"));
  EXPECT_TRUE(policies.count(
      "snapkv:budget=256,interval=0,kernel=7,pooling=max,window=32"));
  // The first run: full, wikitext, perplexity streaming.
  const RunSpec& first = g->runs[0];
  EXPECT_EQ(first.policy.ToString(), "full");
  EXPECT_EQ(first.dataset.name, "wikitext-2-raw-v1");
  EXPECT_EQ(first.workload, "perplexity");
  EXPECT_EQ(first.perplexity.protocol, "streaming");
  EXPECT_EQ(first.perplexity.max_tokens, 8192);
  EXPECT_EQ(g->runs[1].workload, "generation");
  EXPECT_EQ(g->runs[1].generation.prompt_tokens, 512);
  EXPECT_EQ(g->runs[2].generation.prompt_tokens, 2048);
  EXPECT_EQ(g->runs[3].dataset.name, "pg19");
}

TEST(GridTest, KeysAreStable) {
  auto a = ParseGridYaml(kDesignGrid, "a.yaml");
  // Same grid, different formatting and comments: same runs, same keys, same order.
  std::string reformatted = std::string("# a comment\n") + kDesignGrid;
  auto b = ParseGridYaml(reformatted, "b.yaml");
  ASSERT_TRUE(a.ok() && b.ok());
  EXPECT_EQ(a->run_keys, b->run_keys);
  // Pinned: a change here means every stored grid would re-run on resubmission.
  EXPECT_EQ(a->run_keys[0], RunKey(a->runs[0]));
  EXPECT_EQ(a->runs[0].CanonicalJson(),
            R"({"dataset":{"name":"wikitext-2-raw-v1","path":"","sample":0,"split":"test"},)"
            R"("device":"cuda","model":{"dtype":"float16","id":"EleutherAI/pythia-70m-deduped",)"
            R"("revision":"main"},"perplexity":{"context_tokens":1024,"continuation_tokens":256,)"
            R"("max_length":2048,"max_tokens":8192,"protocol":"streaming","stride":512},)"
            R"("policy":"full","position_mode":"original","repeats":5,"seed":0,"threads":0,)"
            R"("warmup":2,"workload":"perplexity"})");
  EXPECT_EQ(a->run_keys[0], "73fc8e2c0916886d");
}

TEST(GridTest, DeduplicatesIdenticalPoints) {
  std::string yaml = WithPolicy("{name: full}") +
                     "    - full\n    - {name: window, window: [8, 8, 16]}\n";
  auto g = ParseGridYaml(yaml, "g.yaml");
  ASSERT_TRUE(g.ok()) << g.status();
  EXPECT_EQ(g->runs.size(), 3u);  // full, window=8, window=16
}

TEST(GridTest, ExpandsEveryAxis) {
  auto g = ParseGridYaml(R"(name: axes
position_mode: [original, shifted]
seed: [1, 2]
datasets:
  - {name: pg19, samples: 2}
  - {name: text, path: /tmp/x.txt, sample: [3, 5]}
workloads:
  perplexity: {protocol: [sliding, streaming, prefill]}
  generation: {prompt_tokens: [16, 32], new_tokens: [4, 8]}
  noop: {ms: 1}
grid:
  policy:
    - {name: knorm, budget: 4, skip_layers: [[0], [0, 1]]}
    - "tova:cache_size=8"
)", "axes.yaml");
  ASSERT_TRUE(g.ok()) << g.status();
  // policies 2+1=3, datasets 2+2=4, workloads 3+4+1=8, modes 2, seeds 2; sliding runs only
  // with `full`, so none of these policies' 1 sliding workload is expanded.
  EXPECT_EQ(g->runs.size(), 3u * 4u * (8u - 1u) * 2u * 2u);
  std::set<std::string> policies, samples;
  for (const auto& r : g->runs) {
    policies.insert(r.policy.ToString());
    samples.insert(r.dataset.name + "#" + std::to_string(r.dataset.sample));
  }
  EXPECT_EQ(policies, (std::set<std::string>{"knorm:budget=4,prune_after=0,skip_layers=[0]",
                                             "knorm:budget=4,prune_after=0,skip_layers=[0,1]",
                                             "tova:cache_size=8"}));
  EXPECT_EQ(samples, (std::set<std::string>{"pg19#0", "pg19#1", "text#3", "text#5"}));
  EXPECT_EQ(g->runs[0].device, "auto");
}

// kv_dtype is an axis of its own: every eviction policy meets every storage type, a quantised
// one only where it can run (position mode original, batch 1), and bad text is located.
TEST(GridTest, KvDtypeIsAnAxisComposingWithEveryPolicy) {
  auto g = ParseGridYaml(R"(name: kivi
position_mode: [original, shifted]
kv_dtype: [model, int4, "int2:group=16,residual=64"]
datasets:
  - {name: pg19}
workloads:
  perplexity: {protocol: streaming}
  generation: {prompt_tokens: 64, new_tokens: 8, batch: [1, 2]}
grid:
  policy:
    - {name: full}
    - {name: streaming_llm, window: 60}
    - {name: adakv, budget: 16, inner: keydiff}
)", "kivi.yaml");
  ASSERT_TRUE(g.ok()) << g.status();
  std::multiset<std::string> points;
  for (const auto& r : g->runs) {
    points.insert(r.policy.name + "/" + r.kv_dtype.ToString() + "/" + r.position_mode);
    if (r.kv_dtype.quantized()) {
      EXPECT_EQ(r.position_mode, "original");
      EXPECT_EQ(r.ToJson()["kv_dtype"], r.kv_dtype.ToString());
      if (r.workload == "generation") EXPECT_EQ(r.generation.batch, 1);
    } else {
      EXPECT_FALSE(r.ToJson().contains("kv_dtype"));
    }
  }
  // batch 2 with policies other than full is refused later by the worker, not by the grid; the
  // model dtype runs in both modes x 3 workload points; quantised ones in original x 2 points.
  EXPECT_EQ(points.count("streaming_llm/int4/original"), 2u);
  EXPECT_EQ(points.count("full/int2:group=16,residual=64/original"), 2u);
  EXPECT_EQ(points.count("streaming_llm/int4/shifted"), 0u);
  EXPECT_EQ(points.count("full/model/shifted"), 3u);
  // adakv (holes) only with the model dtype: 2 modes x its 2 runnable workload points (streaming
  // is refused: no decoding variant; generation batch 1 and 2).
  EXPECT_EQ(points.count("adakv/int4/original"), 0u);
  EXPECT_EQ(points.count("adakv/model/original"), 2u);
  EXPECT_EQ(g->runs.size(), 2u * (2u * 3u + 2u * 2u) + 2u * 2u);
  EXPECT_THAT(absl::StrJoin(g->skipped, "; "), HasSubstr("needs position_mode original"));
  EXPECT_THAT(absl::StrJoin(g->skipped, "; "), HasSubstr("adakv keeps uneven heads"));

  std::string error = ErrorOf(R"(name: bad
kv_dtype: [int4, int3]
datasets: [{name: pg19}]
workloads: {perplexity: {protocol: streaming}}
grid: {policy: [{name: full}]}
)");
  EXPECT_THAT(error, HasSubstr("g.yaml:2:"));
  EXPECT_THAT(error, HasSubstr("kv_dtype 'int3'"));

  // The CPU engine computing in float32 only (float16 weights compute in float32 on CPU): a
  // bfloat16 model or a CUDA device keeps its model-dtype points.
  for (const char* where : {"model: [{id: random:pythia-70m, dtype: bfloat16}, "
                            "{id: random:pythia-70m, dtype: float16}, random:pythia-70m]\n",
                            "device: cuda\n"}) {
    auto h = ParseGridYaml(absl::StrCat("name: h\n", where, R"(kv_dtype: [model, int8]
datasets: [{name: pg19}]
workloads: {generation: {prompt_tokens: 64, new_tokens: 8}}
grid: {policy: [{name: full}]}
)"), "h.yaml");
    ASSERT_TRUE(h.ok()) << h.status();
    for (const auto& r : h->runs) {
      EXPECT_TRUE(!r.kv_dtype.quantized() || (r.model.dtype != "bfloat16" && r.device != "cuda"))
          << where << r.ToJson().dump();
    }
    EXPECT_EQ(h->runs.size(), absl::StrContains(where, "model:") ? 5u : 1u) << where;
    EXPECT_THAT(absl::StrJoin(h->skipped, "; "), HasSubstr("CPU engine computing in float32")) << where;
  }
}

// prefill_chunk is an axis for generation and the prefill protocol; elsewhere the point is the
// unchunked one, stored once. An unchunked run's key does not change (no "prefill_chunk" key).
TEST(GridTest, PrefillChunkExpandsWhereItApplies) {
  auto g = ParseGridYaml(
      "name: t\ndatasets:\n  - {name: wikitext-2-raw-v1}\nprefill_chunk: [0, 512]\n"
      "workloads:\n  perplexity: {protocol: [streaming, prefill]}\n  generation: {}\n"
      "grid:\n  policy:\n    - {name: streaming_llm, window: 60}\n",
      "g.yaml");
  ASSERT_TRUE(g.ok()) << g.status();
  std::multiset<std::string> points;
  for (const auto& r : g->runs) {
    const std::string what = r.workload == "generation" ? "generation" : r.perplexity.protocol;
    points.insert(what + "/" + std::to_string(r.prefill_chunk));
    EXPECT_EQ(r.ToJson().contains("prefill_chunk"), r.prefill_chunk > 0);
    auto back = RunSpec::FromJson(r.ToJson());
    ASSERT_TRUE(back.ok()) << back.status();
    EXPECT_EQ(back->prefill_chunk, r.prefill_chunk);
  }
  EXPECT_EQ(points, (std::multiset<std::string>{"streaming/0", "prefill/0", "prefill/512",
                                                "generation/0", "generation/512"}));
  EXPECT_THAT(ErrorOf("name: t\nprefill_chunk: -1\ndatasets:\n  - {name: wikitext-2-raw-v1}\n"
                      "workloads:\n  generation: {}\ngrid:\n  policy:\n    - full\n"),
              HasSubstr("prefill_chunk"));
}

TEST(GridTest, PairedBaselineIsOnByDefaultPartOfTheKeyAndCanBeTurnedOff) {
  const std::string body =
      "datasets:\n  - {name: wikitext-2-raw-v1}\nworkloads:\n  generation: {}\n"
      "grid:\n  policy:\n    - full\n    - {name: streaming_llm, window: 60}\n";
  auto on = ParseGridYaml("name: t\n" + body, "g.yaml");
  auto off = ParseGridYaml("name: t\npaired_baseline: false\n" + body, "g.yaml");
  ASSERT_TRUE(on.ok() && off.ok()) << on.status() << off.status();
  ASSERT_EQ(on->runs.size(), 2u);
  for (size_t i = 0; i < 2; ++i) {
    const bool full = on->runs[i].policy.name == "full";
    EXPECT_TRUE(on->runs[i].generation.paired_baseline);
    EXPECT_FALSE(off->runs[i].generation.paired_baseline);
    // `full` has no baseline, so its key does not depend on the setting; a policy's does.
    EXPECT_EQ(on->run_keys[i] == off->run_keys[i], full) << on->runs[i].policy.ToString();
    EXPECT_EQ(on->runs[i].ToJson()["generation"].contains("paired_baseline"), !full);
    auto back = RunSpec::FromJson(off->runs[i].ToJson());
    ASSERT_TRUE(back.ok()) << back.status();
    EXPECT_EQ(back->generation.paired_baseline, full);  // full reads back the default
  }
  EXPECT_THAT(ErrorOf("name: t\npaired_baseline: maybe\n" + body), HasSubstr("paired_baseline"));
  nlohmann::json bad = on->runs[1].ToJson();
  bad["generation"]["paired_baseline"] = 1;
  EXPECT_FALSE(RunSpec::FromJson(bad).ok());
}

TEST(GridTest, ModelListSweepsModelsRevisionsAndDtypes) {
  auto g = ParseGridYaml(R"(name: sweep
model:
  - random:pythia-70m
  - {id: random:pythia-160m, dtype: float32}
  - {id: EleutherAI/pythia-70m-deduped, revision: step1000}
datasets: [{name: wikitext-2-raw-v1}]
workloads: {perplexity: {protocol: streaming, max_tokens: 256}}
grid:
  policy: [{name: full}, {name: window, window: 64}]
)", "g.yaml");
  ASSERT_TRUE(g.ok()) << g.status();
  ASSERT_EQ(g->runs.size(), 6u);
  std::set<std::string> models, keys(g->run_keys.begin(), g->run_keys.end());
  for (const auto& r : g->runs) models.insert(r.model.id + "@" + r.model.revision + " " + r.model.dtype);
  EXPECT_EQ(models.size(), 3u);
  EXPECT_EQ(keys.size(), 6u);  // the model is part of every run's key
  EXPECT_EQ(g->runs[2].model.id, "random:pythia-160m");
  EXPECT_EQ(g->runs[2].model.dtype, "float32");
  EXPECT_EQ(g->runs[4].model.revision, "step1000");

  EXPECT_THAT(ErrorOf("name: x\nmodel: []\ndatasets: [{name: pg19}]\nworkloads: {perplexity: {}}\n"
                      "grid: {policy: [{name: full}]}\n"),
              HasSubstr("model is an empty list"));
  EXPECT_THAT(ErrorOf("name: x\nmodel: [a/b, a/b]\ndatasets: [{name: pg19}]\nworkloads: {perplexity: {}}\n"
                      "grid: {policy: [{name: full}]}\n"),
              HasSubstr("listed twice"));
}

TEST(GridTest, ErrorsCarryLineColumnAndHint) {
  // Unknown top-level key, with a suggestion.
  std::string e = ErrorOf("name: t\nrepeat: 3\n");
  EXPECT_THAT(e, HasSubstr("g.yaml:2:1: unknown key 'repeat'"));
  EXPECT_THAT(e, HasSubstr("did you mean 'repeats'"));
  // Wrong type.
  e = ErrorOf("name: t\nrepeats: many\n");
  EXPECT_THAT(e, HasSubstr("g.yaml:2:10: repeats must be an integer, got 'many'"));
  EXPECT_THAT(e, HasSubstr("(hint: "));
  e = ErrorOf("name: t\nrepeats: [1, 2]\n");
  EXPECT_THAT(e, HasSubstr("g.yaml:2:10: repeats must be a single integer"));
  e = ErrorOf("name: t\nrepeats: 0\n");
  EXPECT_THAT(e, HasSubstr("g.yaml:2:10: repeats = 0 is out of range"));
  e = ErrorOf("name: [a]\n");
  EXPECT_THAT(e, HasSubstr("g.yaml:1:7: name must be a non-empty string"));
  e = ErrorOf("name: t\nmodel: {id: x, dtype: fp16}\n");
  EXPECT_THAT(e, HasSubstr("g.yaml:2:23: model.dtype: 'fp16' is not one of"));
  e = ErrorOf("name: t\ndevice: gpu\n");
  EXPECT_THAT(e, HasSubstr("g.yaml:2:9: device 'gpu'"));
  // Unknown policy, with a suggestion.
  e = ErrorOf(WithPolicy("{name: streamingllm, window: 8}"));
  EXPECT_THAT(e, HasSubstr("g.yaml:8:14: unknown policy 'streamingllm'"));
  EXPECT_THAT(e, HasSubstr("did you mean 'streaming_llm'"));
  // Unknown parameter.
  e = ErrorOf(WithPolicy("{name: snapkv, budget: 64, windw: 8}"));
  EXPECT_THAT(e, HasSubstr("g.yaml:8:34: policy 'snapkv' has no parameter 'windw'"));
  EXPECT_THAT(e, HasSubstr("did you mean 'window'"));
  // Out of range: points at the offending list element.
  e = ErrorOf(WithPolicy("{name: streaming_llm, window: [8, 0, 16]}"));
  EXPECT_THAT(e, HasSubstr("g.yaml:8:41: policy 'streaming_llm': parameter 'window' = 0 is out of range"));
  e = ErrorOf(WithPolicy("{name: knorm, keep_ratio: 1.5}"));
  EXPECT_THAT(e, HasSubstr("g.yaml:8:33: policy 'knorm': parameter 'keep_ratio' = 1.5"));
  // Combination rules of the policy schema.
  e = ErrorOf(WithPolicy("{name: snapkv, budget: 64, kernel: 6}"));
  EXPECT_THAT(e, HasSubstr("g.yaml:8:"));
  EXPECT_THAT(e, HasSubstr("kernel 6 must be odd"));
  e = ErrorOf(WithPolicy("{name: streaming_llm}"));
  EXPECT_THAT(e, HasSubstr("missing required parameter 'window'"));
  // List-valued parameter given as a plain list.
  e = ErrorOf(WithPolicy("{name: knorm, budget: 4, skip_layers: [0, 1]}"));
  EXPECT_THAT(e, HasSubstr("g.yaml:8:"));
  EXPECT_THAT(e, HasSubstr("nest it"));
  // Policy given as a string.
  e = ErrorOf(WithPolicy("\"tova:cache=8\""));
  EXPECT_THAT(e, HasSubstr("g.yaml:8:7: policy 'tova': unknown parameter 'cache'"));
  // Duplicate key.
  e = ErrorOf("name: t\nrepeats: 1\nrepeats: 2\n");
  EXPECT_THAT(e, HasSubstr("g.yaml:3:1: duplicate key 'repeats'"));
  // YAML syntax error.
  e = ErrorOf("name: t\ndatasets: [{name: pg19\nworkloads: {}\n");
  EXPECT_THAT(e, HasSubstr("g.yaml:"));
  EXPECT_THAT(e, HasSubstr("YAML syntax error"));
  // Dataset problems.
  e = ErrorOf("name: t\ndatasets:\n  - {name: wikitext}\n");
  EXPECT_THAT(e, HasSubstr("g.yaml:3:12: dataset name: 'wikitext' is not one of"));
  e = ErrorOf("name: t\ndatasets:\n  - {name: text}\n");
  EXPECT_THAT(e, HasSubstr("g.yaml:3:12: dataset 'text' needs a 'path'"));
  e = ErrorOf("name: t\ndatasets:\n  - {name: pg19, samples: 1, sample: 2}\n");
  EXPECT_THAT(e, HasSubstr("g.yaml:3:30: give either 'samples'"));
  // Workloads.
  e = ErrorOf("name: t\ndatasets: [{name: pg19}]\nworkloads:\n  perplexity: {protocol: stream}\n");
  EXPECT_THAT(e, HasSubstr("g.yaml:4:26: perplexity.protocol: 'stream' is not one of"));
  EXPECT_THAT(e, HasSubstr("did you mean 'streaming'"));
  e = ErrorOf("name: t\ndatasets: [{name: pg19}]\nworkloads:\n  perplexity: {max_length: 256, stride: 512}\n");
  EXPECT_THAT(e, HasSubstr("g.yaml:4:41: perplexity.stride 512 is larger than max_length 256"));
  e = ErrorOf("name: t\ndatasets: [{name: pg19}]\nworkloads:\n  generation: {prompt: 5}\n");
  EXPECT_THAT(e, HasSubstr("g.yaml:4:16: unknown key 'prompt' in workloads.generation"));
  e = ErrorOf("name: t\ndatasets: [{name: pg19}]\nworkloads:\n  generation: {new_tokens: -1}\n");
  EXPECT_THAT(e, HasSubstr("g.yaml:4:28: generation.new_tokens = -1 is out of range"));
  // Missing sections.
  EXPECT_THAT(ErrorOf(""), HasSubstr("g.yaml:1:1: the grid is empty"));
  EXPECT_THAT(ErrorOf("repeats: 1\n"), HasSubstr("g.yaml:1:1: the grid has no 'name'"));
  EXPECT_THAT(ErrorOf("name: t\n"), HasSubstr("no 'datasets'"));
  EXPECT_THAT(ErrorOf("name: t\ndatasets: [{name: pg19}]\n"), HasSubstr("no 'workloads'"));
  EXPECT_THAT(ErrorOf("name: t\ndatasets: [{name: pg19}]\nworkloads: {generation: {}}\n"),
              HasSubstr("no 'grid'"));
  EXPECT_THAT(ErrorOf("- a\n- b\n"), HasSubstr("g.yaml:1:1: the grid must be a mapping"));
}

TEST(GridTest, RejectsHugeGrids) {
  std::string values = "[";
  for (int i = 1; i <= 400; ++i) values += std::to_string(i) + (i < 400 ? "," : "]");
  std::string yaml = "name: t\nseed: " + values + "\ndatasets: [{name: pg19}]\nworkloads:\n"
                     "  generation: {prompt_tokens: " + values + "}\ngrid: {policy: [full]}\n";
  EXPECT_THAT(ErrorOf(yaml), HasSubstr("expands to 160000 runs"));
}

TEST(GridTest, FileErrors) {
  auto g = ParseGridFile("/nonexistent/grid.yaml");
  EXPECT_EQ(g.status().code(), absl::StatusCode::kNotFound);
}

TEST(GridTest, EveryExampleGridParses) {
  namespace fs = std::filesystem;
  int count = 0;
  for (const auto& entry : fs::directory_iterator(fs::path(KVGRID_SOURCE_DIR) / "experiments")) {
    if (entry.path().extension() != ".yaml") continue;
    ++count;
    auto g = ParseGridFile(entry.path().string());
    ASSERT_TRUE(g.ok()) << entry.path() << ": " << g.status();
    EXPECT_FALSE(g->runs.empty()) << entry.path();
    EXPECT_EQ(g->name, entry.path().stem().string()) << "file name and grid name differ";
    std::printf("%s: %zu runs\n", entry.path().filename().c_str(), g->runs.size());
  }
  EXPECT_GE(count, 4);
}

TEST(GridTest, QuickGridIsSmallAndCpu) {
  auto g = ParseGridFile(std::string(KVGRID_SOURCE_DIR) + "/experiments/quick.yaml");
  ASSERT_TRUE(g.ok()) << g.status();
  std::set<std::string> names;
  for (const auto& r : g->runs) {
    EXPECT_EQ(r.device, "cpu");
    EXPECT_EQ(r.model.id, "EleutherAI/pythia-70m-deduped");
    names.insert(r.policy.name);
  }
  EXPECT_EQ(names, (std::set<std::string>{"full", "streaming_llm", "h2o", "snapkv", "knorm", "tova"}));
  // full: 3 protocols + generation; the 5 others: streaming, prefill + generation.
  EXPECT_EQ(g->runs.size(), 4u + 5u * 3u);
  EXPECT_TRUE(g->skipped.size() == 1u && g->skipped[0].find("sliding") != std::string::npos);
}

TEST(GridTest, PoliciesGridCoversEveryPolicy) {
  auto g = ParseGridFile(std::string(KVGRID_SOURCE_DIR) + "/experiments/policies.yaml");
  ASSERT_TRUE(g.ok()) << g.status();
  std::set<std::string> names, datasets;
  for (const auto& r : g->runs) {
    names.insert(r.policy.name);
    datasets.insert(r.dataset.name);
  }
  EXPECT_EQ(names.size(), 11u);
  EXPECT_EQ(datasets, (std::set<std::string>{"wikitext-2-raw-v1", "pg19"}));
}

}  // namespace
}  // namespace kvgrid

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size);

namespace kvgrid {
namespace {

// The fuzz target's corpus replays in every build (no libFuzzer needed), plus nasty inputs.
TEST(GridFuzzCorpus, ReplaysWithoutCrashing) {
  namespace fs = std::filesystem;
  int n = 0;
  for (const auto& entry :
       fs::directory_iterator(fs::path(KVGRID_SOURCE_DIR) / "tests" / "grid" / "corpus")) {
    std::ifstream in(entry.path(), std::ios::binary);
    std::string data((std::istreambuf_iterator<char>(in)), std::istreambuf_iterator<char>());
    LLVMFuzzerTestOneInput(reinterpret_cast<const uint8_t*>(data.data()), data.size());
    ++n;
  }
  EXPECT_GE(n, 5);
  for (std::string nasty : {std::string(5000, '['), std::string("name: \0x", 8),
                            std::string("{{{{{{{{{{{{{{{{{{{{{{{{{{{{{{{{{{{{{{{{{{{{{{{{{"),
                            std::string("name: t\n") + std::string(3000, '-') + " x",
                            std::string("&a [*a]"), std::string("\xff\xfe\x00\x00", 4)}) {
    LLVMFuzzerTestOneInput(reinterpret_cast<const uint8_t*>(nasty.data()), nasty.size());
  }
}

}  // namespace
}  // namespace kvgrid

namespace kvgrid {
namespace {

// The format example in experiments/README.md is a valid grid.
TEST(GridDocs, ReadmeExampleParses) {
  std::ifstream in(std::string(KVGRID_SOURCE_DIR) + "/experiments/README.md");
  std::string text((std::istreambuf_iterator<char>(in)), std::istreambuf_iterator<char>());
  size_t begin = text.find("```yaml\n");
  ASSERT_NE(begin, std::string::npos);
  begin += 8;
  size_t end = text.find("```", begin);
  auto g = ParseGridYaml(text.substr(begin, end - begin), "experiments/README.md");
  ASSERT_TRUE(g.ok()) << g.status();
  EXPECT_EQ(g->name, "my-grid");
  // policies 1+2+2=5; datasets 1+2+1=4; workloads 3+2=5; sliding only for `full` (4 other
  // policies x 4 datasets left out); kv_dtype model and int4.
  EXPECT_EQ(g->runs.size(), 2u * (5u * 4u * 5u - 4u * 4u));
}

}  // namespace
}  // namespace kvgrid
