// model/hub: resolving "ORG/NAME" through the Hugging Face cache against a loopback fake Hub.
#include "model/hub/hf_hub.h"

#include <sys/stat.h>
#include <unistd.h>

#include <filesystem>
#include <set>
#include <string>

#include <gmock/gmock.h>
#include <gtest/gtest.h>

#include "common/sha256.h"
#include "tests/hub/fake_hub_server.h"

namespace kvgrid {
namespace {

namespace fs = std::filesystem;
using ::testing::HasSubstr;
using testing::FakeHub;
using testing::ReadAll;
using testing::TempDir;

constexpr char kRepo[] = "EleutherAI/pythia-70m-deduped";

std::string Fixture(const std::string& rel) { return std::string(KVGRID_FIXTURES_DIR) + "/" + rel; }

class HubTest : public testing::FakeHubSuite {
 protected:
  HubOptions Options() const {
    HubOptions o;
    o.endpoint = hub_->endpoint();
    o.cache_dir = tmp_.path() + "/hub";
    o.http = FakeHub::FastOptions();
    o.lock_timeout_s = 10;
    o.warn_on_fallback = false;
    return o;
  }
  std::string RepoRoot() const {
    return tmp_.path() + "/hub/models--EleutherAI--pythia-70m-deduped";
  }
};

TEST_F(HubTest, DownloadsIntoHfCacheLayout) {
  auto snap = ResolveModelSnapshot(kRepo, "main", Options());
  ASSERT_TRUE(snap.ok()) << snap.status();
  EXPECT_FALSE(snap->local_dir);
  EXPECT_EQ(snap->commit.size(), 40u);
  EXPECT_EQ(snap->dir, RepoRoot() + "/snapshots/" + snap->commit);
  EXPECT_EQ(ReadAll(RepoRoot() + "/refs/main"), snap->commit);
  EXPECT_EQ(std::set<std::string>(snap->files.begin(), snap->files.end()),
            (std::set<std::string>{"config.json", "model.safetensors", "tokenizer.json"}));
  EXPECT_EQ(snap->downloaded.size(), 3u);

  const std::string model = ReadAll(Fixture("models/tiny-neox-pythia-like/model.safetensors"));
  const std::string model_sha = Sha256Hex(model);
  // LFS file: blob named by its sha256, the snapshot entry a relative symlink to it.
  std::string pointer = snap->dir + "/model.safetensors";
  ASSERT_TRUE(fs::is_symlink(pointer));
  EXPECT_EQ(fs::read_symlink(pointer).string(), "../../blobs/" + model_sha);
  EXPECT_TRUE(fs::is_regular_file(RepoRoot() + "/blobs/" + model_sha));
  EXPECT_EQ(ReadAll(pointer), model);
  // Regular file: blob named by the git blob sha1 the server sent as ETag.
  std::string config_pointer = snap->dir + "/config.json";
  ASSERT_TRUE(fs::is_symlink(config_pointer));
  std::string config_target = fs::read_symlink(config_pointer).string();
  EXPECT_THAT(config_target, ::testing::StartsWith("../../blobs/"));
  EXPECT_EQ(config_target.size(), std::string("../../blobs/").size() + 40);
  EXPECT_EQ(ReadAll(config_pointer), ReadAll(Fixture("models/tiny-neox-pythia-like/config.json")));
  EXPECT_EQ(ReadAll(snap->dir + "/tokenizer.json"),
            ReadAll(Fixture("tokenizer/gpt-neox-20b-tokenizer.json")));
  // Nothing temporary left behind.
  for (const auto& e : fs::recursive_directory_iterator(RepoRoot())) {
    std::string name = e.path().filename().string();
    EXPECT_EQ(name.find(".incomplete"), std::string::npos) << e.path();
    EXPECT_EQ(name.find(".tmp"), std::string::npos) << e.path();
    EXPECT_EQ(name.find(".lock"), std::string::npos) << e.path();
  }
  // Every file after the first was requested at the pinned commit.
  EXPECT_EQ(hub_->Count("GET", "/resolve/" + snap->commit + "/model.safetensors"), 1);
}

TEST_F(HubTest, ResolveModelDirReturnsSnapshotDir) {
  auto dir = ResolveModelDir(kRepo, "", Options());  // "" = main
  ASSERT_TRUE(dir.ok()) << dir.status();
  EXPECT_THAT(*dir, HasSubstr("/models--EleutherAI--pythia-70m-deduped/snapshots/"));
  EXPECT_TRUE(fs::is_regular_file(*dir + "/model.safetensors"));
}

TEST_F(HubTest, SecondResolveDownloadsNothing) {
  auto first = ResolveModelSnapshot(kRepo, "main", Options());
  ASSERT_TRUE(first.ok()) << first.status();
  ASSERT_TRUE(hub_->Control("reset"));
  auto second = ResolveModelSnapshot(kRepo, "main", Options());
  ASSERT_TRUE(second.ok()) << second.status();
  EXPECT_EQ(second->dir, first->dir);
  EXPECT_TRUE(second->downloaded.empty());
  EXPECT_EQ(hub_->Count("GET", ""), 0);  // metadata HEADs only
  EXPECT_GT(hub_->Count("HEAD", ""), 0);
}

TEST_F(HubTest, OtherRevisionReusesBlobs) {
  auto main_snap = ResolveModelSnapshot(kRepo, "main", Options());
  ASSERT_TRUE(main_snap.ok()) << main_snap.status();
  ASSERT_TRUE(hub_->Control("reset"));
  auto step = ResolveModelSnapshot(kRepo, "v1.0", Options());
  ASSERT_TRUE(step.ok()) << step.status();
  EXPECT_NE(step->commit, main_snap->commit);
  EXPECT_NE(step->dir, main_snap->dir);
  EXPECT_EQ(ReadAll(RepoRoot() + "/refs/v1.0"), step->commit);
  EXPECT_TRUE(step->downloaded.empty());  // same etags: blobs shared between snapshots
  EXPECT_EQ(hub_->Count("GET", ""), 0);
  EXPECT_EQ(fs::read_symlink(step->dir + "/model.safetensors"),
            fs::read_symlink(main_snap->dir + "/model.safetensors"));
}

TEST_F(HubTest, RevisionWithoutSafetensorsFallsBackToPytorchModelBin) {
  // Pythia's step branches ship pytorch_model.bin only: transformers' fallback order.
  auto step = ResolveModelSnapshot(kRepo, "step143000", Options());
  ASSERT_TRUE(step.ok()) << step.status();
  EXPECT_EQ(std::set<std::string>(step->files.begin(), step->files.end()),
            (std::set<std::string>{"config.json", "pytorch_model.bin", "tokenizer.json"}));
  const std::string bin = ReadAll(Fixture("models/tiny-neox-sequential-bin/pytorch_model.bin"));
  ASSERT_TRUE(fs::is_symlink(step->dir + "/pytorch_model.bin"));
  EXPECT_EQ(fs::read_symlink(step->dir + "/pytorch_model.bin").string(), "../../blobs/" + Sha256Hex(bin));
  EXPECT_EQ(ReadAll(step->dir + "/pytorch_model.bin"), bin);
  EXPECT_FALSE(fs::exists(step->dir + "/model.safetensors"));
  EXPECT_EQ(hub_->Count("GET", "/model.safetensors"), 0);  // looked up (HEAD), never fetched
  // Offline, the cached .bin snapshot is complete.
  HubOptions off = Options();
  off.offline = true;
  auto offline = ResolveModelSnapshot(kRepo, "step143000", off);
  ASSERT_TRUE(offline.ok()) << offline.status();
  EXPECT_EQ(offline->dir, step->dir);
}

TEST_F(HubTest, ShardedRevisionFetchesTheIndexAndEveryShard) {
  auto snap = ResolveModelSnapshot(kRepo, "sharded", Options());
  ASSERT_TRUE(snap.ok()) << snap.status();
  EXPECT_EQ(std::set<std::string>(snap->files.begin(), snap->files.end()),
            (std::set<std::string>{"config.json", "tokenizer.json", "model.safetensors.index.json",
                                   "model-00001-of-00002.safetensors", "model-00002-of-00002.safetensors"}));
  for (const char* f : {"model-00001-of-00002.safetensors", "model-00002-of-00002.safetensors"}) {
    EXPECT_TRUE(fs::is_symlink(snap->dir + "/" + f)) << f;
    EXPECT_EQ(hub_->Count("GET", std::string("/") + f), 1) << f << " downloaded once";
  }
  // A shard missing from the cache makes the offline snapshot incomplete, and says which.
  fs::remove(snap->dir + "/model-00002-of-00002.safetensors");
  HubOptions off = Options();
  off.offline = true;
  auto offline = ResolveModelSnapshot(kRepo, "sharded", off);
  ASSERT_FALSE(offline.ok());
  EXPECT_THAT(offline.status().message(), HasSubstr("model-00002-of-00002.safetensors"));
  // Online again it is relinked from the blob, nothing downloaded.
  ASSERT_TRUE(hub_->Control("reset"));
  auto again = ResolveModelSnapshot(kRepo, "sharded", Options());
  ASSERT_TRUE(again.ok()) << again.status();
  EXPECT_TRUE(again->downloaded.empty());
  EXPECT_TRUE(fs::is_regular_file(again->dir + "/model-00002-of-00002.safetensors"));
}

TEST_F(HubTest, RevisionWithNoWeightsNamesEveryFileTried) {
  ASSERT_TRUE(hub_->Control("fail404", "pytorch_model.bin"));
  auto r = ResolveModelSnapshot(kRepo, "step143000", Options());
  ASSERT_FALSE(r.ok());
  EXPECT_EQ(r.status().code(), absl::StatusCode::kNotFound);
  for (const char* f : {"model.safetensors", "model.safetensors.index.json", "pytorch_model.bin",
                        "pytorch_model.bin.index.json"}) {
    EXPECT_THAT(r.status().message(), HasSubstr(f));
  }
  EXPECT_THAT(r.status().message(), HasSubstr("step143000"));
}

TEST_F(HubTest, CommitHashAsRevision) {
  auto main_snap = ResolveModelSnapshot(kRepo, "main", Options());
  ASSERT_TRUE(main_snap.ok()) << main_snap.status();
  auto by_commit = ResolveModelSnapshot(kRepo, main_snap->commit, Options());
  ASSERT_TRUE(by_commit.ok()) << by_commit.status();
  EXPECT_EQ(by_commit->dir, main_snap->dir);
  EXPECT_FALSE(fs::exists(RepoRoot() + "/refs/" + main_snap->commit));
  HubOptions off = Options();
  off.offline = true;
  auto offline = ResolveModelSnapshot(kRepo, main_snap->commit, off);
  ASSERT_TRUE(offline.ok()) << offline.status();
  EXPECT_EQ(offline->dir, main_snap->dir);
}

TEST_F(HubTest, OfflineResolvesFromCacheWithoutNetwork) {
  auto online = ResolveModelSnapshot(kRepo, "main", Options());
  ASSERT_TRUE(online.ok()) << online.status();
  ASSERT_TRUE(hub_->Control("reset"));
  HubOptions o = Options();
  o.offline = true;
  auto offline = ResolveModelSnapshot(kRepo, "main", o);
  ASSERT_TRUE(offline.ok()) << offline.status();
  EXPECT_EQ(offline->dir, online->dir);
  EXPECT_TRUE(offline->from_cache_only);
  EXPECT_EQ(hub_->Log().size(), 0u);  // not a single request
  o.endpoint = "http://127.0.0.1:1";  // and no network needed at all
  EXPECT_TRUE(ResolveModelSnapshot(kRepo, "main", o).ok());
}

TEST_F(HubTest, OfflineWithEmptyCacheSaysOfflineAndNamesFile) {
  HubOptions o = Options();
  o.offline = true;
  auto r = ResolveModelSnapshot(kRepo, "main", o);
  ASSERT_FALSE(r.ok());
  EXPECT_EQ(r.status().code(), absl::StatusCode::kNotFound);
  EXPECT_THAT(r.status().message(), HasSubstr("offline"));
  EXPECT_THAT(r.status().message(), HasSubstr("HF_HUB_OFFLINE"));
  EXPECT_THAT(r.status().message(), HasSubstr("config.json"));
  EXPECT_THAT(r.status().message(), HasSubstr("refs/main"));
  EXPECT_EQ(hub_->Log().size(), 0u);
}

TEST_F(HubTest, OfflineWithMissingFileNamesIt) {
  auto online = ResolveModelSnapshot(kRepo, "main", Options());
  ASSERT_TRUE(online.ok()) << online.status();
  fs::remove(online->dir + "/tokenizer.json");
  HubOptions o = Options();
  o.offline = true;
  auto r = ResolveModelSnapshot(kRepo, "main", o);
  ASSERT_FALSE(r.ok());
  EXPECT_THAT(r.status().message(), HasSubstr("offline"));
  EXPECT_THAT(r.status().message(), HasSubstr("tokenizer.json"));
  // Online again, the missing pointer is recreated from the blob without downloading.
  ASSERT_TRUE(hub_->Control("reset"));
  auto again = ResolveModelSnapshot(kRepo, "main", Options());
  ASSERT_TRUE(again.ok()) << again.status();
  EXPECT_TRUE(fs::is_regular_file(again->dir + "/tokenizer.json"));
  EXPECT_EQ(hub_->Count("GET", ""), 0);
}

TEST_F(HubTest, LocalDirectoryIsReturnedAsIs) {
  std::string dir = Fixture("models/tiny-neox-pythia-like");
  HubOptions o = Options();
  o.endpoint = "http://127.0.0.1:1";
  auto snap = ResolveModelSnapshot(dir, "main", o);
  ASSERT_TRUE(snap.ok()) << snap.status();
  EXPECT_TRUE(snap->local_dir);
  EXPECT_EQ(snap->dir, dir);
  auto plain = ResolveModelDir(dir, "", o);
  ASSERT_TRUE(plain.ok());
  EXPECT_EQ(*plain, dir);
}

TEST_F(HubTest, MissingLocalPathAndBadIdsAreErrors) {
  auto missing = ResolveModelDir("./no/such/model-dir", "main", Options());
  ASSERT_FALSE(missing.ok());
  EXPECT_THAT(missing.status().message(), HasSubstr("./no/such/model-dir"));
  for (const char* bad : {"a/b/c", "org/na me", "org/../x", "org--x/y", ""}) {
    auto r = ResolveModelDir(bad, "main", Options());
    ASSERT_FALSE(r.ok()) << bad;
    EXPECT_EQ(r.status().code(), absl::StatusCode::kInvalidArgument) << bad;
  }
  auto bad_rev = ResolveModelDir(kRepo, "../../etc", Options());
  EXPECT_EQ(bad_rev.status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_EQ(hub_->Log().size(), 0u);
}

TEST_F(HubTest, MissingFileIs404NotFoundNamingUrl) {
  ASSERT_TRUE(hub_->Control("fail404", "model.safetensors"));
  auto r = ResolveModelSnapshot(kRepo, "main", Options());
  ASSERT_FALSE(r.ok());
  EXPECT_EQ(r.status().code(), absl::StatusCode::kNotFound);
  EXPECT_THAT(r.status().message(),
              HasSubstr("not found: " + hub_->endpoint() + "/" + kRepo + "/resolve/"));
  EXPECT_THAT(r.status().message(), HasSubstr("/model.safetensors"));
  EXPECT_THAT(r.status().message(), HasSubstr("404"));
  // config.json came before and is cached, but no snapshot entry for the missing file.
  auto main_commit = ReadAll(RepoRoot() + "/refs/main");
  EXPECT_TRUE(main_commit.empty());  // the ref is only written once the snapshot is complete
  for (const auto& e : fs::recursive_directory_iterator(RepoRoot())) {
    EXPECT_NE(e.path().filename().string(), "model.safetensors") << e.path();
  }
}

TEST_F(HubTest, UnknownRepoAndRevisionAreNotFound) {
  auto repo = ResolveModelSnapshot("EleutherAI/no-such-model", "main", Options());
  ASSERT_FALSE(repo.ok());
  EXPECT_EQ(repo.status().code(), absl::StatusCode::kNotFound);
  EXPECT_THAT(repo.status().message(), HasSubstr("RepoNotFound"));
  EXPECT_THAT(repo.status().message(), HasSubstr("EleutherAI/no-such-model"));
  auto rev = ResolveModelSnapshot(kRepo, "step999", Options());
  ASSERT_FALSE(rev.ok());
  EXPECT_EQ(rev.status().code(), absl::StatusCode::kNotFound);
  EXPECT_THAT(rev.status().message(), HasSubstr("step999"));
}

TEST_F(HubTest, UnreachableEndpointIsNamed) {
  HubOptions o = Options();
  o.endpoint = "http://127.0.0.1:1";
  o.http.max_attempts = 2;
  auto r = ResolveModelSnapshot(kRepo, "main", o);
  ASSERT_FALSE(r.ok());
  EXPECT_EQ(r.status().code(), absl::StatusCode::kUnavailable);
  EXPECT_THAT(r.status().message(), HasSubstr("127.0.0.1:1"));
  EXPECT_THAT(r.status().message(), HasSubstr("config.json"));
}

TEST_F(HubTest, UnreachableEndpointFallsBackToCompleteCache) {
  auto online = ResolveModelSnapshot(kRepo, "main", Options());
  ASSERT_TRUE(online.ok()) << online.status();
  HubOptions o = Options();
  o.endpoint = "http://127.0.0.1:1";
  o.http.max_attempts = 1;
  auto r = ResolveModelSnapshot(kRepo, "main", o);
  ASSERT_TRUE(r.ok()) << r.status();
  EXPECT_EQ(r->dir, online->dir);
  EXPECT_TRUE(r->from_cache_only);
}

TEST_F(HubTest, ResumesAfterDroppedConnection) {
  ASSERT_TRUE(hub_->Control("drop_once", "model.safetensors"));
  auto snap = ResolveModelSnapshot(kRepo, "main", Options());
  ASSERT_TRUE(snap.ok()) << snap.status();
  const std::string model = ReadAll(Fixture("models/tiny-neox-pythia-like/model.safetensors"));
  EXPECT_EQ(ReadAll(snap->dir + "/model.safetensors"), model);
  // The second GET of the blob asked only for the missing tail.
  int ranged = 0;
  for (const auto& e : hub_->Log()) {
    std::string range = e.value("range", "");
    if (e.value("path", "").rfind("/_lfs/", 0) == 0 && !range.empty()) {
      ++ranged;
      EXPECT_EQ(range, "bytes=" + std::to_string(model.size() / 2) + "-");
    }
  }
  EXPECT_EQ(ranged, 1);
}

TEST_F(HubTest, WrongShaIsRejectedAndNothingIsPublished) {
  ASSERT_TRUE(hub_->Control("wrong_sha", "model.safetensors"));
  auto r = ResolveModelSnapshot(kRepo, "main", Options());
  ASSERT_FALSE(r.ok());
  EXPECT_EQ(r.status().code(), absl::StatusCode::kDataLoss);
  EXPECT_THAT(r.status().message(), HasSubstr("sha256 mismatch"));
  EXPECT_THAT(r.status().message(), HasSubstr("model.safetensors"));
  const std::string real_sha =
      Sha256Hex(ReadAll(Fixture("models/tiny-neox-pythia-like/model.safetensors")));
  for (const auto& e : fs::recursive_directory_iterator(RepoRoot())) {
    std::string name = e.path().filename().string();
    EXPECT_NE(name, "model.safetensors") << e.path();
    EXPECT_EQ(name.find(".incomplete"), std::string::npos) << e.path();
    EXPECT_EQ(name.find(real_sha), std::string::npos) << e.path();
  }
}

TEST_F(HubTest, BearerTokenIsSentAndRequiredWhenAsked) {
  ASSERT_TRUE(hub_->Control("require_token", "", "hf_secret"));
  auto denied = ResolveModelSnapshot(kRepo, "main", Options());
  ASSERT_FALSE(denied.ok());
  EXPECT_EQ(denied.status().code(), absl::StatusCode::kPermissionDenied);
  EXPECT_THAT(denied.status().message(), HasSubstr("HF_TOKEN"));
  EXPECT_THAT(denied.status().message(), HasSubstr("401"));
  HubOptions o = Options();
  o.token = "hf_secret";
  auto ok = ResolveModelSnapshot(kRepo, "main", o);
  ASSERT_TRUE(ok.ok()) << ok.status();
  bool saw_bearer = false;
  for (const auto& e : hub_->Log()) saw_bearer |= e.value("auth", "") == "Bearer hf_secret";
  EXPECT_TRUE(saw_bearer);
}

TEST_F(HubTest, TransientServerErrorIsRetried) {
  ASSERT_TRUE(hub_->Control("fail503_once", "config.json"));
  auto snap = ResolveModelSnapshot(kRepo, "main", Options());
  ASSERT_TRUE(snap.ok()) << snap.status();
  EXPECT_EQ(hub_->Count("HEAD", "/config.json"), 2);
}

TEST_F(HubTest, PartialBlobFromEarlierRunIsResumed) {
  const std::string model = ReadAll(Fixture("models/tiny-neox-pythia-like/model.safetensors"));
  const std::string sha = Sha256Hex(model);
  fs::create_directories(RepoRoot() + "/blobs");
  {
    std::ofstream out(RepoRoot() + "/blobs/" + sha + ".incomplete", std::ios::binary);
    out.write(model.data(), 1000);
  }
  auto snap = ResolveModelSnapshot(kRepo, "main", Options());
  ASSERT_TRUE(snap.ok()) << snap.status();
  EXPECT_EQ(ReadAll(snap->dir + "/model.safetensors"), model);
  int ranged = 0;
  for (const auto& e : hub_->Log()) {
    if (e.value("path", "").rfind("/_lfs/", 0) == 0) {
      ranged += e.value("range", "") == "bytes=1000-";
    }
  }
  EXPECT_EQ(ranged, 1);
}

TEST_F(HubTest, FromEnvReadsVariables) {
  testing::ClearHubEnv();
  ::setenv("HOME", tmp_.path().c_str(), 1);
  HubOptions d = HubOptions::FromEnv();
  EXPECT_EQ(d.endpoint, "https://huggingface.co");
  EXPECT_EQ(d.cache_dir, tmp_.path() + "/.cache/huggingface/hub");
  EXPECT_FALSE(d.offline);
  EXPECT_TRUE(d.token.empty());

  ::setenv("HF_HOME", (tmp_.path() + "/hfhome").c_str(), 1);
  fs::create_directories(tmp_.path() + "/hfhome");
  std::ofstream(tmp_.path() + "/hfhome/token") << "hf_from_file\n";
  ::setenv("HF_ENDPOINT", "http://127.0.0.1:9/", 1);
  ::setenv("HF_HUB_OFFLINE", "1", 1);
  HubOptions e = HubOptions::FromEnv();
  EXPECT_EQ(e.endpoint, "http://127.0.0.1:9");
  EXPECT_EQ(e.cache_dir, tmp_.path() + "/hfhome/hub");
  EXPECT_TRUE(e.offline);
  EXPECT_EQ(e.token, "hf_from_file");

  ::setenv("HF_HUB_CACHE", (tmp_.path() + "/elsewhere").c_str(), 1);
  ::setenv("HF_TOKEN", "hf_env", 1);
  ::setenv("HF_HUB_OFFLINE", "0", 1);
  HubOptions f = HubOptions::FromEnv();
  EXPECT_EQ(f.cache_dir, tmp_.path() + "/elsewhere");
  EXPECT_EQ(f.token, "hf_env");
  EXPECT_FALSE(f.offline);
  testing::ClearHubEnv();
}

TEST(HubNames, RepoFolderAndEtag) {
  EXPECT_EQ(HubRepoFolderName("EleutherAI/pythia-70m-deduped"),
            "models--EleutherAI--pythia-70m-deduped");
  EXPECT_EQ(HubRepoFolderName("gpt2"), "models--gpt2");
  EXPECT_EQ(NormalizeEtag("\"abc\""), "abc");
  EXPECT_EQ(NormalizeEtag("W/\"abc\""), "abc");
  EXPECT_EQ(NormalizeEtag(" abc "), "abc");
  EXPECT_TRUE(ValidateHubRepoId("EleutherAI/pythia-70m-deduped").ok());
  EXPECT_TRUE(ValidateHubRepoId("gpt2").ok());
  EXPECT_FALSE(ValidateHubRepoId("/abs").ok());
}

}  // namespace
}  // namespace kvgrid
