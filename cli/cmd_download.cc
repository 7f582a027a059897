// kvgrid download: fetch a model snapshot into the Hugging Face cache, or a dataset text into the
// kvgrid dataset cache, and print where it is.
//   kvgrid download EleutherAI/pythia-70m-deduped [--revision main|step143000] [--json]
//   kvgrid download --dataset wikitext-2-raw-v1|pg19 [--split test] [--sample ID] [--json]
#include <CLI/CLI.hpp>
#include <unistd.h>

#include <chrono>
#include <cstdio>
#include <memory>
#include <string>

#include <nlohmann/json.hpp>

#include "absl/status/status.h"
#include "cli/cli_util.h"
#include "cli/command_registry.h"
#include "common/sha256.h"
#include "model/hub/hf_hub.h"
#include "worker/datasets/dataset_loader.h"

namespace kvgrid::cli {
namespace {

struct DownloadArgs {
  std::string model;
  std::string revision = "main";
  std::string dataset;
  std::string split = "test";
  int64_t sample = 0;
  bool offline = false;
  bool json = false;
  bool quiet = false;
};

// "\r<file>  12.3 / 21.5 MB" on stderr, at most ~10 times a second.
class ProgressLine {
 public:
  void Update(const std::string& what, int64_t done, int64_t total) {
    auto now = std::chrono::steady_clock::now();
    bool finished = total > 0 && done >= total;
    if (!finished && now - last_ < std::chrono::milliseconds(100)) return;
    last_ = now;
    if (total > 0) {
      std::fprintf(stderr, "\r%s  %.1f / %.1f MB (%3d%%)   ", what.c_str(), done / 1e6,
                   total / 1e6, static_cast<int>(100.0 * done / total));
    } else {
      std::fprintf(stderr, "\r%s  %.1f MB   ", what.c_str(), done / 1e6);
    }
    if (finished) std::fprintf(stderr, "\n");
    std::fflush(stderr);
  }

 private:
  std::chrono::steady_clock::time_point last_{};
};

int RunModel(const DownloadArgs& a) {
  HubOptions o = HubOptions::FromEnv();
  if (a.offline) o.offline = true;
  auto progress = std::make_shared<ProgressLine>();
  if (!a.quiet && ::isatty(2)) {
    o.progress = [progress](const std::string& file, int64_t done, int64_t total) {
      progress->Update(file, done, total);
    };
  }
  auto snap = ResolveModelSnapshot(a.model, a.revision, o);
  if (!snap.ok()) return Fail("download", snap.status());
  if (a.json) {
    nlohmann::json j = {{"model", a.model},
                        {"revision", snap->local_dir ? "" : snap->revision},
                        {"commit", snap->commit},
                        {"path", snap->dir},
                        {"local_dir", snap->local_dir},
                        {"files", snap->files},
                        {"downloaded", snap->downloaded},
                        {"from_cache_only", snap->from_cache_only}};
    std::printf("%s\n", j.dump().c_str());
  } else {
    std::printf("%s\n", snap->dir.c_str());
  }
  return 0;
}

int RunDataset(const DownloadArgs& a) {
  DatasetRequest r;
  r.name = a.dataset;
  r.split = a.split;
  r.sample = a.sample;
  r.offline = a.offline;
  auto progress = std::make_shared<ProgressLine>();
  if (!a.quiet && ::isatty(2)) {
    std::string what = a.dataset;
    r.http.progress = [progress, what](int64_t done, int64_t total) {
      progress->Update(what, done, total);
    };
  }
  auto path = EnsureDatasetCached(r);
  if (!path.ok()) return Fail("download", path.status());
  if (a.json) {
    auto sha = Sha256File(*path);
    if (!sha.ok()) return Fail("download", sha.status());
    nlohmann::json j = {{"dataset", a.dataset}, {"split", a.split}, {"path", *path},
                        {"sha256", *sha}};
    if (a.dataset == "pg19") j["sample"] = a.sample == 0 ? kDefaultPg19Sample : a.sample;
    std::printf("%s\n", j.dump().c_str());
  } else {
    std::printf("%s\n", path->c_str());
  }
  return 0;
}

std::function<int()> SetupDownload(CLI::App& app) {
  auto args = std::make_shared<DownloadArgs>();
  CLI::App* sub = app.add_subcommand(
      "download",
      "Download a model snapshot (Hugging Face cache: $HF_HOME/hub, $HF_ENDPOINT, $HF_TOKEN, "
      "HF_HUB_OFFLINE=1) or a dataset (cache: $KVGRID_CACHE/datasets or "
      "~/.cache/kvgrid/datasets) and print its local path");
  sub->add_option("model", args->model,
                  "Hub model id (e.g. EleutherAI/pythia-70m-deduped) or a local directory");
  sub->add_option("--revision", args->revision, "Branch, tag or commit (main, step143000, ...)")
      ->capture_default_str();
  sub->add_option("--dataset", args->dataset, "Dataset to cache instead of a model")
      ->check(CLI::IsMember(KnownDatasets()));
  sub->add_option("--split", args->split, "Dataset split")
      ->check(CLI::IsMember({"test", "validation", "train"}))
      ->capture_default_str();
  sub->add_option("--sample", args->sample,
                  "pg19 book id (Gutenberg id of a book in the split; 0 = 10146)")
      ->check(CLI::NonNegativeNumber);
  sub->add_flag("--offline", args->offline, "Use only the local caches (like HF_HUB_OFFLINE=1)");
  sub->add_flag("--json", args->json, "Print a JSON object instead of the path");
  sub->add_flag("-q,--quiet", args->quiet, "No progress output");
  return [args]() -> int {
    if (args->model.empty() == args->dataset.empty()) {
      std::fprintf(stderr,
                   "kvgrid download: error: give either a model id/directory or --dataset NAME "
                   "(not both)\n");
      return 2;
    }
    return args->dataset.empty() ? RunModel(*args) : RunDataset(*args);
  };
}

}  // namespace

KVGRID_REGISTER_COMMAND(download, "download", SetupDownload);

}  // namespace kvgrid::cli
