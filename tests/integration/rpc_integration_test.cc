// Integration tests with real processes on loopback: `kvgrid coordinator`, several `kvgrid worker
// --executor noop` daemons and the client commands (kvgrid_rpc_cli, the torch-free build of the
// same command sources). Fault injection with kill -9, SIGSTOP/SIGCONT and SIGTERM. Every wait
// is bounded; nothing asserts on how long something took.
#include <fcntl.h>
#include <signal.h>
#include <sys/stat.h>
#include <sys/types.h>
#include <sys/wait.h>
#include <unistd.h>

#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <functional>
#include <map>
#include <memory>
#include <set>
#include <sstream>
#include <string>
#include <thread>
#include <vector>

#include <gtest/gtest.h>

#include <filesystem>
#include <nlohmann/json.hpp>

#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "storage/store.h"

namespace kvgrid {
namespace {

using nlohmann::json;
using Clock = std::chrono::steady_clock;

const char* const kCli = KVGRID_RPC_CLI;

std::string ReadAll(const std::string& path) {
  std::ifstream in(path);
  std::stringstream ss;
  ss << in.rdbuf();
  return ss.str();
}

void WriteFile(const std::string& path, const std::string& text) {
  std::ofstream out(path);
  out << text;
}

// Polls `pred` every 100 ms for up to `timeout_s` seconds.
bool WaitFor(const std::function<bool()>& pred, double timeout_s) {
  const auto deadline = Clock::now() + std::chrono::milliseconds(static_cast<int64_t>(timeout_s * 1000));
  while (Clock::now() < deadline) {
    if (pred()) return true;
    std::this_thread::sleep_for(std::chrono::milliseconds(100));
  }
  return pred();
}

// A child process with stdout/stderr in files.
class Process {
 public:
  Process(std::vector<std::string> args, const std::string& out_path, const std::string& err_path)
      : out_path_(out_path), err_path_(err_path) {
    pid_ = ::fork();
    if (pid_ == 0) {
      int out = ::open(out_path.c_str(), O_WRONLY | O_CREAT | O_TRUNC, 0644);
      int err = ::open(err_path.c_str(), O_WRONLY | O_CREAT | O_TRUNC, 0644);
      ::dup2(out, 1);
      ::dup2(err, 2);
      ::unsetenv("KVGRID_TOKEN");
      ::unsetenv("KVGRID_TOKEN_FILE");
      ::unsetenv("KVGRID_COORDINATOR");
      ::unsetenv("KVGRID_TLS_CA");
      // Each process's kvgrid cache (worker result spools) next to its output, not in $HOME
      // shared by every test.
      const std::string cache = out_path + ".cache";
      ::setenv("KVGRID_CACHE", cache.c_str(), 1);
      std::vector<char*> argv;
      for (auto& a : args) argv.push_back(a.data());
      argv.push_back(nullptr);
      ::execv(argv[0], argv.data());
      std::_Exit(127);
    }
  }
  ~Process() {
    if (running()) {
      Signal(SIGKILL);
      Wait(10);
    }
  }
  bool running() {
    if (exited_) return false;
    int status = 0;
    pid_t r = ::waitpid(pid_, &status, WNOHANG);
    if (r == pid_) {
      exited_ = true;
      status_ = status;
      return false;
    }
    return true;
  }
  void Signal(int sig) { ::kill(pid_, sig); }
  // Exit code (128+signal when killed); -1 on timeout.
  int Wait(double timeout_s) {
    if (!WaitFor([&] { return !running(); }, timeout_s)) return -1;
    if (WIFEXITED(status_)) return WEXITSTATUS(status_);
    if (WIFSIGNALED(status_)) return 128 + WTERMSIG(status_);
    return -2;
  }
  std::string out() const { return ReadAll(out_path_); }
  std::string err() const { return ReadAll(err_path_); }
  pid_t pid() const { return pid_; }

 private:
  pid_t pid_ = -1;
  bool exited_ = false;
  int status_ = 0;
  std::string out_path_, err_path_;
};

struct CliResult {
  int rc = -1;
  std::string out, err;
};

class RpcIntegrationTest : public ::testing::Test {
 protected:
  void SetUp() override {
    char tmpl[] = "/tmp/kvgrid-rpc-it-XXXXXX";
    ASSERT_NE(::mkdtemp(tmpl), nullptr);
    dir_ = tmpl;
    db_ = dir_ + "/results.db";
    token_file_ = dir_ + "/token";
    WriteFile(token_file_, "it-token-0123456789abcdef\n");
    ::chmod(token_file_.c_str(), 0600);
  }

  void TearDown() override {
    workers_.clear();
    coordinator_.reset();
    if (!HasFailure()) {
      std::string cmd = "rm -rf '" + dir_ + "'";
      (void)std::system(cmd.c_str());
    } else {
      std::fprintf(stderr, "test files kept in %s\n", dir_.c_str());
    }
  }

  std::string Path(const std::string& name) const { return dir_ + "/" + name; }

  // Starts the coordinator; `port` 0 picks one (remembered for restarts).
  void StartCoordinator(int64_t lease_ms = 1500, int64_t heartbeat_ms = 300,
                        std::vector<std::string> extra = {}) {
    std::vector<std::string> args = {kCli,          "coordinator",   "--db",
                                     db_,           "--listen",      absl::StrCat("127.0.0.1:", port_),
                                     "--token-file", token_file_,    "--lease-ms",
                                     absl::StrCat(lease_ms),        "--heartbeat-ms",
                                     absl::StrCat(heartbeat_ms),    "--max-wait-ms",
                                     "500"};
    args.insert(args.end(), extra.begin(), extra.end());
    const int n = coordinator_starts_++;
    coordinator_ = std::make_unique<Process>(args, Path(absl::StrCat("coordinator", n, ".out")),
                                             Path(absl::StrCat("coordinator", n, ".err")));
    std::string out;
    ASSERT_TRUE(WaitFor(
        [&] {
          out = coordinator_->out();
          return absl::StrContains(out, "listening on ") || !coordinator_->running();
        },
        30))
        << "coordinator did not start";
    ASSERT_TRUE(coordinator_->running()) << coordinator_->err();
    auto pos = out.find("listening on ");
    address_ = out.substr(pos + 13);
    address_ = address_.substr(0, address_.find('\n'));
    port_ = std::stoi(address_.substr(address_.rfind(':') + 1));
  }

  Process* StartWorker(const std::string& id, std::vector<std::string> extra = {}) {
    std::vector<std::string> args = {kCli,          "worker",      "--coordinator", address_,
                                     "--token-file", token_file_,  "--executor",    "noop",
                                     "--worker-id",  id,           "--lease-wait-ms", "500",
                                     "--backoff-max-ms", "500"};
    args.insert(args.end(), extra.begin(), extra.end());
    workers_[id] = std::make_unique<Process>(args, Path(id + ".out"), Path(id + ".err"));
    return workers_[id].get();
  }

  CliResult Cli(std::vector<std::string> args, bool with_token = true, double timeout_s = 60) {
    static int n = 0;
    std::vector<std::string> full = {kCli};
    full.insert(full.end(), args.begin(), args.end());
    full.push_back("--coordinator");
    full.push_back(address_);
    if (with_token) {
      full.push_back("--token-file");
      full.push_back(token_file_);
    }
    const std::string base = Path(absl::StrCat("cli", n++));
    Process p(full, base + ".out", base + ".err");
    CliResult r;
    r.rc = p.Wait(timeout_s);
    r.out = p.out();
    r.err = p.err();
    return r;
  }

  std::string WriteGrid(const std::string& name, int runs, int ms, int max_attempts = 3) {
    const std::string path = Path(name + ".yaml");
    WriteFile(path, absl::StrCat("name: ", name, "\n",
                                 "model: {id: EleutherAI/pythia-70m-deduped, revision: main, "
                                 "dtype: float32}\n",
                                 "device: cpu\n",
                                 "max_attempts: ", max_attempts, "\n",
                                 "datasets:\n",
                                 "  - {name: wikitext-2-raw-v1, split: test, samples: ", runs,
                                 "}\n",
                                 "workloads:\n",
                                 "  noop: {ms: ", ms, "}\n",
                                 "grid:\n",
                                 "  policy:\n",
                                 "    - {name: full}\n"));
    return path;
  }

  // `kvgrid status EXPERIMENT --json` -> the experiment object (null when unreachable).
  json ExperimentStatus(const std::string& name) {
    CliResult r = Cli({"status", name, "--json"});
    if (r.rc != 0) return json();
    json j = json::parse(r.out, nullptr, false);
    if (j.is_discarded() || !j.contains("experiments") || j["experiments"].empty()) return json();
    return j["experiments"][0];
  }

  json Results(const std::string& name) {
    CliResult r = Cli({"results", name, "--format", "json"});
    EXPECT_EQ(r.rc, 0) << r.err;
    json j = json::parse(r.out, nullptr, false);
    EXPECT_FALSE(j.is_discarded()) << r.out;
    return j;
  }

  bool Finished(const std::string& name) {
    json e = ExperimentStatus(name);
    return e.is_object() && e.value("planned", 0) == 0 && e.value("running", 0) == 0 &&
           e.value("status", "") != "active";
  }

  // Runs a read-only SQL query on the database (as `kvgrid query` would).
  QueryTable Sql(const std::string& sql) {
    auto store = Store::Open(db_, OpenMode::kReadOnly);
    EXPECT_TRUE(store.ok()) << store.status();
    if (!store.ok()) return {};
    auto t = (*store)->ExecuteReadOnlyQuery(sql);
    EXPECT_TRUE(t.ok()) << t.status();
    return t.ok() ? *t : QueryTable{};
  }

  int64_t SqlInt(const std::string& sql) {
    QueryTable t = Sql(sql);
    if (t.rows.empty() || t.rows[0].empty()) return -1;
    return std::stoll(t.rows[0][0].text.empty() ? "0" : t.rows[0][0].text);
  }

  // Every run of the experiment done, with exactly one accepted result record.
  void ExpectExactlyOnce(const std::string& name, int runs) {
    json results = Results(name);
    ASSERT_TRUE(results.is_array());
    ASSERT_EQ(static_cast<int>(results.size()), runs);
    std::set<std::string> keys;
    for (const auto& r : results) {
      EXPECT_EQ(r["status"], "done") << r.dump();
      EXPECT_TRUE(r["metrics"].contains("elapsed_ms")) << r.dump();
      EXPECT_FALSE(r["worker"].get<std::string>().empty());
      keys.insert(r["run_key"].get<std::string>());
    }
    EXPECT_EQ(static_cast<int>(keys.size()), runs);
    // Exactly one result record per run (results keyed by (run, attempt); first valid wins).
    const std::string exp_id =
        absl::StrCat("(SELECT id FROM experiments WHERE name = '", name, "')");
    EXPECT_EQ(SqlInt(absl::StrCat("SELECT COUNT(*) FROM result_records rr JOIN runs r ON "
                                  "r.id = rr.run_id WHERE r.experiment_id = ", exp_id)),
              runs);
    EXPECT_EQ(SqlInt(absl::StrCat("SELECT COUNT(*) FROM runs WHERE experiment_id = ", exp_id,
                                  " AND status = 'done' AND result_attempt IS NOT NULL")),
              runs);
    EXPECT_EQ(SqlInt(absl::StrCat("SELECT COUNT(*) FROM (SELECT run_id FROM result_records "
                                  "GROUP BY run_id HAVING COUNT(*) > 1)")),
              0);
  }

  std::string dir_, db_, token_file_, address_;
  int port_ = 0;
  int coordinator_starts_ = 0;
  std::unique_ptr<Process> coordinator_;
  std::map<std::string, std::unique_ptr<Process>> workers_;
};

TEST_F(RpcIntegrationTest, WorkersCompleteEveryRunExactlyOnce) {
  StartCoordinator();
  for (int i = 0; i < 3; ++i) StartWorker(absl::StrCat("w", i));
  const std::string grid = WriteGrid("basic", 24, 50);
  CliResult submit = Cli({"submit", grid, "--wait", "--poll", "0.2"}, true, 120);
  ASSERT_EQ(submit.rc, 0) << submit.out << submit.err;
  EXPECT_TRUE(absl::StrContains(submit.out, "24 runs")) << submit.out;
  ExpectExactlyOnce("basic", 24);
  json results = Results("basic");
  for (const auto& r : results) EXPECT_EQ(r["attempts"], 1) << r.dump();

  // status shows the workers; results render in every format.
  CliResult status = Cli({"status"});
  EXPECT_EQ(status.rc, 0);
  EXPECT_TRUE(absl::StrContains(status.out, "basic")) << status.out;
  EXPECT_TRUE(absl::StrContains(status.out, "w0")) << status.out;
  CliResult csv = Cli({"results", "basic", "--format", "csv"});
  EXPECT_EQ(csv.rc, 0);
  EXPECT_TRUE(absl::StartsWith(csv.out, "run_key,status,attempts,policy,dataset")) << csv.out;
  CliResult md = Cli({"results", "basic", "--format", "md"});
  EXPECT_EQ(md.rc, 0);
  EXPECT_TRUE(absl::StrContains(md.out, "| run_key ")) << md.out;

  // Resubmitting the identical grid reuses every finished run.
  CliResult again = Cli({"submit", grid});
  EXPECT_EQ(again.rc, 0) << again.err;
  EXPECT_TRUE(absl::StrContains(again.out, "24 finished runs reused")) << again.out;

  // SIGTERM drains: each worker exits 0.
  for (auto& [id, w] : workers_) w->Signal(SIGTERM);
  for (auto& [id, w] : workers_) EXPECT_EQ(w->Wait(30), 0) << id << ": " << w->err();
}

TEST_F(RpcIntegrationTest, KilledWorkerRunIsReleasedAfterExpiryAndCompletesOnce) {
  StartCoordinator(/*lease_ms=*/1500, /*heartbeat_ms=*/300);
  Process* a = StartWorker("victim");
  const std::string grid = WriteGrid("kill-worker", 4, 2000);
  ASSERT_EQ(Cli({"submit", grid}).rc, 0);
  // Wait until the victim is in the middle of a run, then kill -9 it.
  std::string victim_key;
  ASSERT_TRUE(WaitFor(
      [&] {
        for (const auto& r : Results("kill-worker")) {
          if (r["status"] == "running" && r["worker"] == "victim") {
            victim_key = r["run_key"];
            return true;
          }
        }
        return false;
      },
      30));
  a->Signal(SIGKILL);
  EXPECT_EQ(a->Wait(10), 128 + SIGKILL);
  StartWorker("rescuer");
  ASSERT_TRUE(WaitFor([&] { return Finished("kill-worker"); }, 90));
  ExpectExactlyOnce("kill-worker", 4);
  for (const auto& r : Results("kill-worker")) {
    EXPECT_EQ(r["worker"], "rescuer") << r.dump();
    if (r["run_key"] == victim_key) EXPECT_EQ(r["attempts"], 2) << r.dump();
  }
  EXPECT_GE(SqlInt("SELECT COUNT(*) FROM leases WHERE worker_id = 'victim' AND outcome = 'expired'"),
            1);
}

TEST_F(RpcIntegrationTest, KilledCoordinatorRestartsAndFinishesWithoutLossOrDuplicates) {
  StartCoordinator(/*lease_ms=*/3000, /*heartbeat_ms=*/300);
  StartWorker("w0");
  StartWorker("w1");
  const std::string grid = WriteGrid("kill-coordinator", 30, 150);
  ASSERT_EQ(Cli({"submit", grid}).rc, 0);
  ASSERT_TRUE(WaitFor(
      [&] {
        json e = ExperimentStatus("kill-coordinator");
        return e.is_object() && e.value("done", 0) >= 4;
      },
      60));
  coordinator_->Signal(SIGKILL);
  EXPECT_EQ(coordinator_->Wait(10), 128 + SIGKILL);
  // Workers keep computing and retrying; the coordinator comes back on the same port and db.
  std::this_thread::sleep_for(std::chrono::milliseconds(800));
  StartCoordinator(/*lease_ms=*/3000, /*heartbeat_ms=*/300);
  ASSERT_TRUE(WaitFor([&] { return Finished("kill-coordinator"); }, 120))
      << ExperimentStatus("kill-coordinator").dump();
  ExpectExactlyOnce("kill-coordinator", 30);
  EXPECT_TRUE(absl::StrContains(coordinator_->err(), "resuming 1 unfinished experiment"))
      << coordinator_->err();
  // The workers noticed the outage and came back.
  bool any_reconnected = absl::StrContains(workers_["w0"]->err(), "reachable again") ||
                         absl::StrContains(workers_["w1"]->err(), "reachable again");
  EXPECT_TRUE(any_reconnected) << workers_["w0"]->err();
}

TEST_F(RpcIntegrationTest, LateResultFromExpiredLeaseFirstValidCompletionWins) {
  StartCoordinator(/*lease_ms=*/1000, /*heartbeat_ms=*/200);
  Process* slow = StartWorker("frozen");
  const std::string grid = WriteGrid("late", 1, 3000);
  ASSERT_EQ(Cli({"submit", grid}).rc, 0);
  ASSERT_TRUE(WaitFor(
      [&] {
        json r = Results("late");
        return !r.empty() && r[0]["status"] == "running" && r[0]["worker"] == "frozen";
      },
      30));
  // Freeze the worker: no heartbeats, so its lease expires and the run is leased again.
  slow->Signal(SIGSTOP);
  StartWorker("second");
  ASSERT_TRUE(WaitFor(
      [&] {
        json r = Results("late");
        return !r.empty() && r[0]["status"] == "running" && r[0]["worker"] == "second";
      },
      30));
  slow->Signal(SIGCONT);  // the frozen worker finishes and reports late
  ASSERT_TRUE(WaitFor([&] { return Finished("late"); }, 60));
  // Both workers eventually offer their result; the coordinator keeps exactly one.
  auto reported = [&](const std::string& id) {
    std::string err = workers_[id]->err();
    return absl::StrContains(err, "result accepted") || absl::StrContains(err, "result rejected");
  };
  ASSERT_TRUE(WaitFor([&] { return reported("frozen") && reported("second"); }, 60))
      << workers_["frozen"]->err() << workers_["second"]->err();
  ExpectExactlyOnce("late", 1);
  EXPECT_EQ(SqlInt("SELECT COUNT(*) FROM leases"), 2);
  EXPECT_EQ(SqlInt("SELECT COUNT(*) FROM leases WHERE outcome IN ('completed', 'late_completed')"), 1);
  json r = Results("late")[0];
  EXPECT_EQ(r["attempts"], 2);
  const std::string winner = r["worker"];
  const std::string loser = winner == "frozen" ? "second" : "frozen";
  // Whichever valid result arrived first was recorded; the other was refused as a duplicate.
  EXPECT_TRUE(absl::StrContains(workers_[winner]->err(), "result accepted"))
      << workers_[winner]->err();
  EXPECT_TRUE(absl::StrContains(workers_[loser]->err(), "result rejected: duplicate"))
      << workers_[loser]->err();
  if (winner == "frozen") {
    EXPECT_EQ(SqlInt("SELECT COUNT(*) FROM leases WHERE worker_id = 'frozen' AND outcome = "
                     "'late_completed'"), 1);
  }
}

TEST_F(RpcIntegrationTest, ClientsAndWorkersWithoutTheTokenAreRefused) {
  StartCoordinator();
  CliResult no_token = Cli({"status"}, /*with_token=*/false);
  EXPECT_EQ(no_token.rc, 1);
  EXPECT_TRUE(absl::StrContains(no_token.err, "UNAUTHENTICATED")) << no_token.err;
  EXPECT_TRUE(absl::StrContains(no_token.err, "missing bearer token")) << no_token.err;

  const std::string wrong = Path("wrong-token");
  WriteFile(wrong, "not-the-token\n");
  CliResult wrong_token = Cli({"status", "--token-file", wrong}, /*with_token=*/false);
  EXPECT_EQ(wrong_token.rc, 1);
  EXPECT_TRUE(absl::StrContains(wrong_token.err, "wrong bearer token")) << wrong_token.err;

  CliResult submit = Cli({"submit", WriteGrid("sneaky", 2, 1)}, /*with_token=*/false);
  EXPECT_EQ(submit.rc, 1);
  EXPECT_TRUE(absl::StrContains(submit.err, "UNAUTHENTICATED")) << submit.err;
  EXPECT_EQ(SqlInt("SELECT COUNT(*) FROM experiments"), 0);

  Process w({kCli, "worker", "--coordinator", address_, "--token-file", wrong, "--executor",
             "noop", "--worker-id", "intruder"},
            Path("intruder.out"), Path("intruder.err"));
  EXPECT_EQ(w.Wait(30), 1);
  EXPECT_TRUE(absl::StrContains(w.err(), "UNAUTHENTICATED")) << w.err();
  EXPECT_EQ(SqlInt("SELECT COUNT(*) FROM workers"), 0);
}

TEST_F(RpcIntegrationTest, CancelStopsTheRemainingRuns) {
  StartCoordinator();
  StartWorker("w0");
  const std::string grid = WriteGrid("to-cancel", 40, 200);
  ASSERT_EQ(Cli({"submit", grid}).rc, 0);
  ASSERT_TRUE(WaitFor(
      [&] {
        json e = ExperimentStatus("to-cancel");
        return e.is_object() && e.value("done", 0) >= 2;
      },
      60));
  CliResult cancel = Cli({"cancel", "to-cancel"});
  ASSERT_EQ(cancel.rc, 0) << cancel.err;
  EXPECT_TRUE(absl::StrContains(cancel.out, "cancelled")) << cancel.out;
  ASSERT_TRUE(WaitFor([&] { return Finished("to-cancel"); }, 30));
  json e = ExperimentStatus("to-cancel");
  EXPECT_EQ(e["status"], "cancelled");
  const int done = e["done"];
  EXPECT_LT(done, 40);
  EXPECT_GT(e.value("cancelled", 0), 0);
  // Nothing more is dispatched: the worker stays idle (its in-flight result, if any, rejected).
  std::this_thread::sleep_for(std::chrono::milliseconds(1500));
  json later = ExperimentStatus("to-cancel");
  EXPECT_EQ(later["done"], done);
  EXPECT_EQ(later.value("running", 0), 0);
  EXPECT_TRUE(workers_["w0"]->running());
  // submit --wait on a cancelled experiment that is resubmitted requeues the cancelled runs.
  CliResult again = Cli({"submit", grid});
  EXPECT_EQ(again.rc, 0) << again.err;
  EXPECT_TRUE(absl::StrContains(again.out, "requeued")) << again.out;
}

TEST_F(RpcIntegrationTest, MalformedGridIsRejectedWithItsLocationAndNothingIsStored) {
  StartCoordinator();
  const std::string bad = Path("bad.yaml");
  WriteFile(bad,
            "name: bad\n"
            "model: {id: EleutherAI/pythia-70m-deduped, revision: main, dtype: float32}\n"
            "device: cpu\n"
            "datasets:\n"
            "  - {name: wikitext-2-raw-v1, split: test, samplez: 3}\n"
            "workloads:\n"
            "  noop: {ms: 1}\n"
            "grid:\n"
            "  policy:\n"
            "    - {name: full}\n");
  CliResult r = Cli({"submit", bad});
  EXPECT_EQ(r.rc, 1);
  EXPECT_TRUE(absl::StrContains(r.err, "bad.yaml:5:")) << r.err;
  EXPECT_TRUE(absl::StrContains(r.err, "samplez")) << r.err;

  const std::string bad_policy = Path("bad-policy.yaml");
  WriteFile(bad_policy,
            "name: bad2\n"
            "model: {id: EleutherAI/pythia-70m-deduped, revision: main, dtype: float32}\n"
            "device: cpu\n"
            "datasets:\n"
            "  - {name: wikitext-2-raw-v1, split: test}\n"
            "workloads:\n"
            "  noop: {ms: 1}\n"
            "grid:\n"
            "  policy:\n"
            "    - {name: no_such_policy}\n");
  CliResult r2 = Cli({"submit", bad_policy});
  EXPECT_EQ(r2.rc, 1);
  EXPECT_TRUE(absl::StrContains(r2.err, "bad-policy.yaml:10:")) << r2.err;

  EXPECT_EQ(SqlInt("SELECT COUNT(*) FROM experiments"), 0);
  EXPECT_EQ(SqlInt("SELECT COUNT(*) FROM runs"), 0);
  CliResult status = Cli({"status"});
  EXPECT_TRUE(absl::StrContains(status.out, "no experiments")) << status.out;
}

TEST_F(RpcIntegrationTest, SigtermFinishesTheCurrentRunOrHandsItBack) {
  StartCoordinator(/*lease_ms=*/5000, /*heartbeat_ms=*/300);
  Process* finisher = StartWorker("finisher");
  const std::string grid = WriteGrid("drain", 3, 1500);
  ASSERT_EQ(Cli({"submit", grid}).rc, 0);
  std::string key;
  ASSERT_TRUE(WaitFor(
      [&] {
        for (const auto& r : Results("drain")) {
          if (r["status"] == "running") {
            key = r["run_key"];
            return true;
          }
        }
        return false;
      },
      30));
  finisher->Signal(SIGTERM);
  EXPECT_EQ(finisher->Wait(30), 0) << finisher->err();
  // It finished the run it held and took no other.
  int done = 0;
  for (const auto& r : Results("drain")) {
    if (r["run_key"] == key) {
      EXPECT_EQ(r["status"], "done");
      EXPECT_EQ(r["worker"], "finisher");
    }
    done += r["status"] == "done";
  }
  EXPECT_EQ(done, 1);

  // --drain-timeout 0: the run is handed back at once without costing an attempt.
  Process* quitter = StartWorker("quitter", {"--drain-timeout", "0"});
  ASSERT_TRUE(WaitFor(
      [&] {
        for (const auto& r : Results("drain")) {
          if (r["status"] == "running" && r["worker"] == "quitter") return true;
        }
        return false;
      },
      30));
  quitter->Signal(SIGTERM);
  EXPECT_EQ(quitter->Wait(30), 0) << quitter->err();
  EXPECT_TRUE(absl::StrContains(quitter->err(), "handing back")) << quitter->err();
  EXPECT_EQ(SqlInt("SELECT COUNT(*) FROM leases WHERE worker_id = 'quitter' AND outcome = 'released'"), 1);
  json after = ExperimentStatus("drain");
  EXPECT_EQ(after.value("running", 0), 0);
  EXPECT_EQ(after.value("planned", 0), 2);
  for (const auto& r : Results("drain")) {
    if (r["status"] == "planned") EXPECT_EQ(r["attempts"], 0) << r.dump();
  }
  // A new worker finishes the grid.
  StartWorker("closer");
  ASSERT_TRUE(WaitFor([&] { return Finished("drain"); }, 60));
  ExpectExactlyOnce("drain", 3);
}

TEST_F(RpcIntegrationTest, TlsWhenCertificateAndKeyAreConfigured) {
  if (::access("/usr/bin/openssl", X_OK) != 0) GTEST_SKIP() << "openssl not installed";
  const std::string cert = Path("cert.pem"), key = Path("key.pem");
  const std::string cmd = absl::StrCat(
      "openssl req -x509 -newkey rsa:2048 -nodes -days 1 -subj /CN=localhost -addext "
      "subjectAltName=DNS:localhost,IP:127.0.0.1 -keyout '", key, "' -out '", cert,
      "' >/dev/null 2>&1");
  ASSERT_EQ(std::system(cmd.c_str()), 0);
  StartCoordinator(1500, 300, {"--tls-cert", cert, "--tls-key", key});
  CliResult plain = Cli({"status"});
  EXPECT_EQ(plain.rc, 1) << plain.out;
  CliResult tls = Cli({"status", "--tls-ca", cert});
  EXPECT_EQ(tls.rc, 0) << tls.err;
  StartWorker("tls-worker", {"--tls-ca", cert});
  const std::string grid = WriteGrid("tls", 3, 10);
  CliResult submit = Cli({"submit", grid, "--wait", "--poll", "0.2", "--tls-ca", cert}, true, 60);
  EXPECT_EQ(submit.rc, 0) << submit.err;
}

TEST_F(RpcIntegrationTest, RunCommandRunsAGridInOneProcess) {
  const std::string grid = WriteGrid("all-in-one", 6, 20);
  Process p({kCli, "run", grid, "--workers", "3", "--db", db_, "--executor", "noop"},
            Path("run.out"), Path("run.err"));
  ASSERT_EQ(p.Wait(120), 0) << p.err();
  EXPECT_TRUE(absl::StrContains(p.err(), "6/6 done")) << p.err();
  EXPECT_FALSE(p.out().empty());
  EXPECT_EQ(SqlInt("SELECT COUNT(*) FROM result_records"), 6);
  // A second run of the same grid reuses every result.
  Process again({kCli, "run", grid, "--db", db_, "--executor", "noop"}, Path("run2.out"),
                Path("run2.err"));
  ASSERT_EQ(again.Wait(60), 0) << again.err();
  EXPECT_TRUE(absl::StrContains(again.err(), "(0 to run, 6 already done")) << again.err();
  EXPECT_EQ(SqlInt("SELECT COUNT(*) FROM result_records"), 6);
}

TEST_F(RpcIntegrationTest, RunWithoutTheHubNamesTheOfflineDemoAndStoresNothing) {
  // The README's main command on a machine that cannot reach the Hub: the model is resolved
  // before anything is stored, and the error says how to run offline.
  ::setenv("HF_HUB_OFFLINE", "1", 1);
  ::setenv("HF_HOME", Path("empty-hf-home").c_str(), 1);
  Process p({kCli, "run", std::string(KVGRID_SOURCE_DIR) + "/experiments/quick.yaml", "--db", db_},
            Path("run.out"), Path("run.err"));
  const int rc = p.Wait(60);
  ::unsetenv("HF_HUB_OFFLINE");
  ::unsetenv("HF_HOME");
  EXPECT_EQ(rc, 1) << p.err();
  EXPECT_TRUE(absl::StrContains(p.err(), "EleutherAI/pythia-70m-deduped")) << p.err();
  EXPECT_TRUE(absl::StrContains(p.err(), "kvgrid run experiments/offline-demo.yaml")) << p.err();
  EXPECT_FALSE(std::filesystem::exists(db_)) << "nothing may be stored";
}

}  // namespace
}  // namespace kvgrid
