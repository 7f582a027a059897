// common/http_download and common/sha256 against the loopback fake server.
#include "common/http_download.h"

#include <filesystem>
#include <fstream>
#include <string>

#include <gmock/gmock.h>
#include <gtest/gtest.h>

#include "absl/strings/ascii.h"
#include "common/atomic_file.h"
#include "common/sha256.h"
#include "tests/hub/fake_hub_server.h"

namespace kvgrid {
namespace {

namespace fs = std::filesystem;
using ::testing::HasSubstr;
using testing::FakeHub;
using testing::ReadAll;
using testing::TempDir;

std::string Book() { return testing::FakeHubBookBytes(); }

class HttpDownloadTest : public testing::FakeHubSuite {
 protected:
  std::string BookUrl() const { return hub_->endpoint() + "/pg19/test/10146.txt"; }
  std::string Dest() const { return tmp_.path() + "/sub/dir/book.txt"; }
};

TEST_F(HttpDownloadTest, DownloadsVerifiesAndPublishesAtomically) {
  const std::string book = Book();
  DownloadExpectations expect;
  expect.size = static_cast<int64_t>(book.size());
  expect.sha256 = absl::AsciiStrToUpper(Sha256Hex(book));  // case-insensitive
  auto r = HttpDownloadToFile(BookUrl(), Dest(), FakeHub::FastOptions(), expect);
  ASSERT_TRUE(r.ok()) << r.status();
  EXPECT_EQ(ReadAll(Dest()), book);
  EXPECT_EQ(r->sha256, Sha256Hex(book));
  EXPECT_EQ(r->size, static_cast<int64_t>(book.size()));
  EXPECT_EQ(r->response.status, 200);
  EXPECT_EQ(r->attempts, 1);
  EXPECT_FALSE(r->resumed);
  EXPECT_FALSE(fs::exists(Dest() + ".incomplete"));
}

TEST_F(HttpDownloadTest, NotFoundNamesUrlAndLeavesNothing) {
  std::string url = hub_->endpoint() + "/pg19/test/1.txt";
  auto r = HttpDownloadToFile(url, Dest(), FakeHub::FastOptions());
  ASSERT_FALSE(r.ok());
  EXPECT_EQ(r.status().code(), absl::StatusCode::kNotFound);
  EXPECT_THAT(r.status().message(), HasSubstr("not found: " + url));
  EXPECT_THAT(r.status().message(), HasSubstr("HTTP 404"));
  EXPECT_FALSE(fs::exists(Dest()));
  EXPECT_FALSE(fs::exists(Dest() + ".incomplete"));
  EXPECT_EQ(hub_->Count("GET", "/1.txt"), 1);  // 404 is not retried
}

TEST_F(HttpDownloadTest, DroppedConnectionIsResumedWithRange) {
  ASSERT_TRUE(hub_->Control("drop_once", "10146.txt"));
  const std::string book = Book();
  DownloadExpectations expect;
  expect.sha256 = Sha256Hex(book);
  auto r = HttpDownloadToFile(BookUrl(), Dest(), FakeHub::FastOptions(), expect);
  ASSERT_TRUE(r.ok()) << r.status();
  EXPECT_EQ(ReadAll(Dest()), book);
  EXPECT_EQ(r->attempts, 2);
  EXPECT_TRUE(r->resumed);
  EXPECT_EQ(r->response.status, 206);
  auto log = hub_->Log();
  ASSERT_EQ(log.size(), 2u);
  EXPECT_EQ(log[0].value("range", ""), "");
  EXPECT_EQ(log[1].value("range", ""), "bytes=" + std::to_string(book.size() / 2) + "-");
}

TEST_F(HttpDownloadTest, PartialFileFromEarlierRunIsResumed) {
  const std::string book = Book();
  ASSERT_TRUE(WriteFileAtomically(Dest() + ".incomplete", book.substr(0, 1000)).ok());
  auto r = HttpDownloadToFile(BookUrl(), Dest(), FakeHub::FastOptions());
  ASSERT_TRUE(r.ok()) << r.status();
  EXPECT_EQ(ReadAll(Dest()), book);
  EXPECT_TRUE(r->resumed);
  auto log = hub_->Log();
  ASSERT_EQ(log.size(), 1u);
  EXPECT_EQ(log[0].value("range", ""), "bytes=1000-");
}

TEST_F(HttpDownloadTest, ServerIgnoringRangeRestartsFromZero) {
  ASSERT_TRUE(hub_->Control("no_range"));
  const std::string book = Book();
  ASSERT_TRUE(WriteFileAtomically(Dest() + ".incomplete", book.substr(0, 1000)).ok());
  auto r = HttpDownloadToFile(BookUrl(), Dest(), FakeHub::FastOptions());
  ASSERT_TRUE(r.ok()) << r.status();
  EXPECT_EQ(r->response.status, 200);
  EXPECT_EQ(ReadAll(Dest()), book);  // not 1000 bytes + the whole book
}

TEST_F(HttpDownloadTest, StalePartialIsDiscardedAfterShaMismatch) {
  const std::string book = Book();
  ASSERT_TRUE(WriteFileAtomically(Dest() + ".incomplete", std::string(1000, 'x')).ok());
  DownloadExpectations expect;
  expect.sha256 = Sha256Hex(book);
  auto r = HttpDownloadToFile(BookUrl(), Dest(), FakeHub::FastOptions(), expect);
  ASSERT_TRUE(r.ok()) << r.status();
  EXPECT_EQ(ReadAll(Dest()), book);
  EXPECT_FALSE(r->resumed);
}

TEST_F(HttpDownloadTest, ShaMismatchIsDataLossAndLeavesNoFile) {
  DownloadExpectations expect;
  expect.sha256 = Sha256Hex("something else");
  auto r = HttpDownloadToFile(BookUrl(), Dest(), FakeHub::FastOptions(), expect);
  ASSERT_FALSE(r.ok());
  EXPECT_EQ(r.status().code(), absl::StatusCode::kDataLoss);
  EXPECT_THAT(r.status().message(), HasSubstr("sha256 mismatch for " + BookUrl()));
  EXPECT_FALSE(fs::exists(Dest()));
  EXPECT_FALSE(fs::exists(Dest() + ".incomplete"));
}

TEST_F(HttpDownloadTest, SizeMismatchIsDataLoss) {
  DownloadExpectations expect;
  expect.size = static_cast<int64_t>(Book().size()) + 5;
  auto r = HttpDownloadToFile(BookUrl(), Dest(), FakeHub::FastOptions(), expect);
  ASSERT_FALSE(r.ok());
  EXPECT_EQ(r.status().code(), absl::StatusCode::kDataLoss);
  EXPECT_THAT(r.status().message(), HasSubstr("size mismatch"));
  EXPECT_FALSE(fs::exists(Dest()));
}

TEST_F(HttpDownloadTest, UnreachableHostGivesUpAfterBoundedRetries) {
  HttpOptions o = FakeHub::FastOptions();
  o.max_attempts = 3;
  auto r = HttpDownloadToFile("http://127.0.0.1:1/x.bin", Dest(), o);
  ASSERT_FALSE(r.ok());
  EXPECT_EQ(r.status().code(), absl::StatusCode::kUnavailable);
  EXPECT_THAT(r.status().message(), HasSubstr("cannot reach 127.0.0.1:1"));
  EXPECT_THAT(r.status().message(), HasSubstr("gave up after 3 attempts"));
  EXPECT_FALSE(fs::exists(Dest()));
  EXPECT_FALSE(fs::exists(Dest() + ".incomplete"));
}

TEST_F(HttpDownloadTest, HeadWithoutRedirectsShowsHubMetadata) {
  std::string url =
      hub_->endpoint() + "/EleutherAI/pythia-70m-deduped/resolve/main/model.safetensors";
  auto r = HttpHead(url, FakeHub::FastOptions(), /*follow_redirects=*/false);
  ASSERT_TRUE(r.ok()) << r.status();
  EXPECT_EQ(r->status, 302);
  EXPECT_EQ(r->headers.count("x-repo-commit"), 1u);
  EXPECT_EQ(r->headers.count("x-linked-etag"), 1u);
  EXPECT_EQ(r->headers.count("location"), 1u);
  auto followed = HttpHead(url, FakeHub::FastOptions(), /*follow_redirects=*/true);
  ASSERT_TRUE(followed.ok()) << followed.status();
  EXPECT_EQ(followed->status, 200);
  EXPECT_THAT(followed->effective_url, HasSubstr("/_lfs/"));
}

TEST_F(HttpDownloadTest, BearerTokenHeader) {
  ASSERT_TRUE(hub_->Control("require_token", "", "tok"));
  auto denied = HttpDownloadToFile(BookUrl(), Dest(), FakeHub::FastOptions());
  ASSERT_FALSE(denied.ok());
  EXPECT_EQ(denied.status().code(), absl::StatusCode::kPermissionDenied);
  EXPECT_THAT(denied.status().message(), HasSubstr("HTTP 401"));
  EXPECT_THAT(denied.status().message(), HasSubstr(BookUrl()));
  HttpOptions o = FakeHub::FastOptions();
  o.bearer_token = "tok";
  auto ok = HttpDownloadToFile(BookUrl(), Dest(), o);
  ASSERT_TRUE(ok.ok()) << ok.status();
}

TEST(HttpUtil, UrlEndpoint) {
  EXPECT_EQ(UrlEndpoint("https://huggingface.co/a/b"), "huggingface.co:443");
  EXPECT_EQ(UrlEndpoint("http://127.0.0.1:1/x"), "127.0.0.1:1");
  EXPECT_EQ(UrlEndpoint("http://user:pw@host/x"), "host:80");
  EXPECT_EQ(UrlEndpoint("http://[::1]:8080/x"), "[::1]:8080");
}

TEST(Sha256, KnownVectorsAndFile) {
  EXPECT_EQ(Sha256Hex(""), "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855");
  EXPECT_EQ(Sha256Hex("abc"), "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad");
  Sha256 h;
  h.Update("a");
  h.Update("bc");
  EXPECT_EQ(h.HexDigest(), Sha256Hex("abc"));
  TempDir tmp;
  std::string f = tmp.path() + "/x";
  ASSERT_TRUE(WriteFileAtomically(f, "abc").ok());
  auto sha = Sha256File(f);
  ASSERT_TRUE(sha.ok());
  EXPECT_EQ(*sha, Sha256Hex("abc"));
  auto missing = Sha256File(tmp.path() + "/nope");
  ASSERT_FALSE(missing.ok());
  EXPECT_THAT(missing.status().message(), HasSubstr(tmp.path() + "/nope"));
  EXPECT_TRUE(IsSha256Hex(Sha256Hex("abc")));
  EXPECT_FALSE(IsSha256Hex("abc"));
}

}  // namespace
}  // namespace kvgrid
