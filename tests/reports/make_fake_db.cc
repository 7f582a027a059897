// Writes the fake grid of fake_results.h into a SQLite database through the Store API, as the
// coordinator would (submit, claim, complete/fail). Used by the `kvgrid report` CLI test.
#include <cstdio>
#include <string>

#include "storage/store.h"
#include "tests/reports/fake_results.h"

int main(int argc, char** argv) {
  using namespace kvgrid;                            // NOLINT
  using namespace kvgrid::reports::testing;          // NOLINT
  if (argc != 2) {
    std::fprintf(stderr, "usage: %s DB\n", argv[0]);
    return 2;
  }
  auto fail = [](const absl::Status& s) {
    std::fprintf(stderr, "make_fake_db: %s\n", std::string(s.message()).c_str());
    return 1;
  };
  auto store = Store::Open(argv[1], OpenMode::kReadWrite);
  if (!store.ok()) return fail(store.status());
  Store& s = **store;
  std::vector<FakeRun> runs = FakeGrid();
  std::vector<RunSpec> specs;
  for (const auto& r : runs) specs.push_back(r.spec);
  int64_t now = 1700000000000;
  auto sub = s.SubmitExperiment(kFakeExperiment, kFakeGridYaml, specs, 1, false, now);
  if (!sub.ok()) return fail(sub.status());
  auto st = s.UpsertWorker({"testhost:1:cpu", "testhost", "cpu", "Fake CPU @ 2.0GHz", "{}", now});
  if (!st.ok()) return fail(st);
  for (size_t i = 0; i < runs.size(); ++i) {
    auto lease = s.ClaimNextRun("testhost:1:cpu", "cpu", 60000, now += 1000);
    if (!lease.ok()) return fail(lease.status());
    if (!lease->has_value()) return fail(absl::InternalError("no run to claim"));
    const LeasedRun& l = **lease;
    for (const auto& r : runs) {
      if (RunKey(r.spec) != l.run_key) continue;
      if (r.fails) {
        st = s.FailRun(l.run_id, l.attempt, l.lease_id, r.error, false, now += 1000);
        if (!st.ok()) return fail(st);
      } else {
        auto c = s.CompleteRun(l.run_id, l.attempt, l.lease_id, r.result, "testhost:1:cpu", now += 1000);
        if (!c.ok()) return fail(c.status());
      }
    }
  }
  return 0;
}
