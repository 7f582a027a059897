// Experiment grids: parse, validate and expand a grid YAML (docs/design.md "Grid YAML") into
// runs with canonical specs and stable keys. No torch, no gRPC, no SQLite.
//
//   name: policies-wikitext
//   model: {id: EleutherAI/pythia-70m-deduped, revision: main, dtype: float16}
//   device: cuda                 # cpu | cuda | cuda:N | auto
//   repeats: 5
//   warmup: 2
//   max_attempts: 3              # leases per run before it is marked failed
//   position_mode: original      # original | shifted | rerotate (a list expands)
//   kv_dtype: [model, int4]      # KV storage: model | int8 | int4 | int2[:group=G,residual=R]
//                                # (KIVI quantisation, core/kv_dtype.h; a list expands)
//   prefill_chunk: [0, 512]      # prompt in chunks of N tokens, evicting after each; 0 = whole
//                                # (generation and the prefill protocol; a list expands)
//   paired_baseline: true        # generation: time `full` beside every other policy in the same
//                                # run, interleaved, for paired Δs with intervals (default true)
//   seed: 0
//   threads: 0                   # 0 = all cores
//   datasets:
//     - {name: wikitext-2-raw-v1, split: test}     # path: FILE reads a local copy
//     - {name: pg19, split: test, samples: 2}      # samples: N -> samples 0..N-1; sample: i|[i,j]
//   workloads:
//     perplexity: {protocol: [sliding, streaming], max_tokens: 4096, max_length: 2048,
//                  stride: 512, context_tokens: 1024, continuation_tokens: 256}
//     generation: {prompt_tokens: [512, 2048], new_tokens: 128, batch: 1}
//     noop: {ms: 5}               # scheduler load tests only
//   grid:
//     policy:
//       - {name: full}
//       - {name: streaming_llm, sink_tokens: 4, window: [252, 508]}
//       - {name: knorm, keep_ratio: 0.8, skip_layers: [[0]]}   # list-valued param: nest it
//
// A list where a scalar is expected expands; the runs are the cartesian product of policy
// parameter values x datasets (x samples) x workloads (x protocols | prompt lengths) x
// position modes x kv dtypes (x prefill chunks). Identical points are stored once. Errors read
// "FILE:LINE:COLUMN: message (hint: ...)".
#pragma once

#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "core/run_spec.h"

namespace kvgrid {

struct Grid {
  std::string name;
  std::string filename;       // as given to the parser ("<string>" when parsed from text)
  std::string yaml;           // the source text, verbatim
  int max_attempts = 3;
  std::vector<RunSpec> runs;  // expanded, de-duplicated, in a stable order
  std::vector<std::string> run_keys;  // RunKey(runs[i])
  // Points of the cartesian product that were left out because they cannot run, with the
  // reason (e.g. the sliding protocol keeps no cache, so only `full` runs it). Shown by
  // `kvgrid run` / `kvgrid submit`.
  std::vector<std::string> skipped;
};

// Parses `text` (named `filename` in error messages). InvalidArgument with file:line:column.
absl::StatusOr<Grid> ParseGridYaml(const std::string& text, const std::string& filename);

// Reads and parses the file at `path` (NotFound if it cannot be read).
absl::StatusOr<Grid> ParseGridFile(const std::string& path);

}  // namespace kvgrid
