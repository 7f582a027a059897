// Test helper: starts tests/hub/fake_hub.py (a loopback Hugging Face Hub stand-in) as a child
// process, waits (bounded) for the port it picked, and stops it on destruction. The script also
// exits by itself after its lifetime or when this process goes away.
#pragma once

#include <signal.h>
#include <stdlib.h>
#include <sys/types.h>
#include <sys/wait.h>
#include <unistd.h>

#include <chrono>
#include <cstdio>
#include <filesystem>
#include <fstream>
#include <memory>
#include <sstream>
#include <string>
#include <thread>
#include <vector>

#include <gtest/gtest.h>
#include <nlohmann/json.hpp>

#include "absl/strings/str_cat.h"
#include "common/http_download.h"

namespace kvgrid::testing {

// A fresh directory under $TMPDIR (or /tmp), removed on destruction.
class TempDir {
 public:
  TempDir() {
    const char* base = std::getenv("TMPDIR");
    std::string tmpl =
        std::string(base != nullptr && *base ? base : "/tmp") + "/kvgrid-test-XXXXXX";
    std::vector<char> buf(tmpl.begin(), tmpl.end());
    buf.push_back('\0');
    char* made = ::mkdtemp(buf.data());
    path_ = made != nullptr ? made : "";
  }
  ~TempDir() {
    std::error_code ec;
    if (!path_.empty()) std::filesystem::remove_all(path_, ec);
  }
  const std::string& path() const { return path_; }

 private:
  std::string path_;
};

inline std::string ReadAll(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  std::stringstream ss;
  ss << in.rdbuf();
  return ss.str();
}

class FakeHub {
 public:
  // Returns nullptr (and prints why) if the server did not come up within ~15 s.
  static std::unique_ptr<FakeHub> Start() {
    std::unique_ptr<FakeHub> hub(new FakeHub);
    if (hub->dir_.path().empty()) return nullptr;
    std::string port_file = hub->dir_.path() + "/port";
    std::string fixtures = KVGRID_FIXTURES_DIR;
    std::vector<std::string> args = {
        "python3", KVGRID_FAKE_HUB_PY, "--port-file", port_file,
        "--model-dir", fixtures + "/models/tiny-neox-pythia-like",
        "--bin-model-dir", fixtures + "/models/tiny-neox-sequential-bin",
        "--tokenizer", fixtures + "/tokenizer/gpt-neox-20b-tokenizer.json",
        "--wikitext-text", fixtures + "/text/wikitext-2-raw-v1-test.txt",
        "--pg19-book", fixtures + "/text/pg19-test-10146.txt",
        "--lifetime", "180"};
    pid_t pid = ::fork();
    if (pid < 0) return nullptr;
    if (pid == 0) {
      std::vector<char*> argv;
      for (auto& a : args) argv.push_back(const_cast<char*>(a.c_str()));
      argv.push_back(nullptr);
      ::execvp("python3", argv.data());
      std::perror("exec python3");
      ::_exit(127);
    }
    hub->pid_ = pid;
    auto deadline = std::chrono::steady_clock::now() + std::chrono::seconds(15);
    while (std::chrono::steady_clock::now() < deadline) {
      std::string port = ReadAll(port_file);
      if (!port.empty()) {
        hub->port_ = std::atoi(port.c_str());
        return hub;
      }
      int st = 0;
      if (::waitpid(pid, &st, WNOHANG) == pid) {
        hub->pid_ = -1;
        std::fprintf(stderr, "fake_hub.py exited early (status %d)\n", st);
        return nullptr;
      }
      std::this_thread::sleep_for(std::chrono::milliseconds(50));
    }
    std::fprintf(stderr, "fake_hub.py did not report a port within 15 s\n");
    return nullptr;
  }

  ~FakeHub() {
    if (pid_ > 0) {
      ::kill(pid_, SIGTERM);
      int st = 0;
      for (int i = 0; i < 50 && ::waitpid(pid_, &st, WNOHANG) == 0; ++i) {
        std::this_thread::sleep_for(std::chrono::milliseconds(20));
      }
      if (::waitpid(pid_, &st, WNOHANG) == 0) {
        ::kill(pid_, SIGKILL);
        ::waitpid(pid_, &st, 0);
      }
    }
  }

  int port() const { return port_; }
  std::string endpoint() const { return absl::StrCat("http://127.0.0.1:", port_); }

  static HttpOptions FastOptions() {
    HttpOptions o;
    o.connect_timeout_s = 5;
    o.low_speed_time_s = 10;
    o.total_timeout_s = 60;
    o.max_attempts = 3;
    o.initial_backoff_ms = 10;
    o.max_backoff_ms = 50;
    return o;
  }

  // /_control?action=...&file=...; returns false if the server did not say ok.
  bool Control(const std::string& action, const std::string& file = "",
               const std::string& token = "") {
    std::string url = absl::StrCat(endpoint(), "/_control?action=", action);
    if (!file.empty()) absl::StrAppend(&url, "&file=", file);
    if (!token.empty()) absl::StrAppend(&url, "&token=", token);
    auto r = HttpGetToString(url, FastOptions());
    return r.ok() && *r == "ok";
  }

  // The requests the server saw since the last reset (not counting control/log requests).
  nlohmann::json Log() {
    auto r = HttpGetToString(endpoint() + "/_log", FastOptions());
    if (!r.ok()) return nlohmann::json::array();
    return nlohmann::json::parse(*r, nullptr, false);
  }

  // Number of logged requests with this method whose path ends with `suffix`.
  int Count(const std::string& method, const std::string& suffix) {
    int n = 0;
    for (const auto& e : Log()) {
      std::string p = e.value("path", "");
      if (e.value("method", "") == method && p.size() >= suffix.size() &&
          p.compare(p.size() - suffix.size(), suffix.size(), suffix) == 0) {
        ++n;
      }
    }
    return n;
  }

 private:
  FakeHub() = default;
  TempDir dir_;
  pid_t pid_ = -1;
  int port_ = 0;
};

// Clears the environment variables the code under test reads, so the caller's shell does not
// leak into tests.
inline void ClearHubEnv() {
  for (const char* v : {"HF_ENDPOINT", "HF_HOME", "HF_HUB_CACHE", "HUGGINGFACE_HUB_CACHE",
                        "HF_HUB_OFFLINE", "HF_DATASETS_OFFLINE", "KVGRID_OFFLINE", "HF_TOKEN",
                        "HUGGING_FACE_HUB_TOKEN", "HF_TOKEN_PATH", "KVGRID_CACHE",
                        "KVGRID_WIKITEXT_URL", "KVGRID_PG19_URL_BASE", "XDG_CACHE_HOME"}) {
    ::unsetenv(v);
  }
}

// The pg19 book fake_hub.py serves: PG-19 test book 10146 byte for byte (CRLF line ends).
inline std::string FakeHubBookBytes() {
  return ReadAll(std::string(KVGRID_FIXTURES_DIR) + "/text/pg19-test-10146.txt");
}

// That book as the dataset loader gives it: "\r\n" and lone "\r" as "\n" (Python's text mode).
inline std::string FakeHubBookText() {
  const std::string raw = FakeHubBookBytes();
  std::string s;
  for (size_t i = 0; i < raw.size(); ++i) {
    if (raw[i] != '\r') {
      s += raw[i];
    } else {
      s += '\n';
      if (i + 1 < raw.size() && raw[i + 1] == '\n') ++i;
    }
  }
  return s;
}

// A GoogleTest suite sharing one fake Hub across its tests: started once with a clean
// environment, reset before every test; every test gets a fresh temporary directory.
class FakeHubSuite : public ::testing::Test {
 protected:
  static void SetUpTestSuite() {
    ClearHubEnv();
    hub_ = FakeHub::Start().release();
  }
  static void TearDownTestSuite() {
    delete hub_;
    hub_ = nullptr;
  }
  void SetUp() override {
    ASSERT_NE(hub_, nullptr) << "fake hub did not start";
    ASSERT_TRUE(hub_->Control("reset"));
    ASSERT_FALSE(tmp_.path().empty());
  }

  static inline FakeHub* hub_ = nullptr;
  TempDir tmp_;
};

}  // namespace kvgrid::testing
