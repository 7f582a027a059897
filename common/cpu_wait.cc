#include "common/cpu_wait.h"

#include <dirent.h>

#include <cstdio>
#include <string>

#include "absl/strings/str_cat.h"

namespace kvgrid {

absl::StatusOr<double> RunQueueWaitMsIn(const char* task_dir) {
  DIR* dir = opendir(task_dir);
  if (dir == nullptr) return absl::UnavailableError(absl::StrCat("cannot read ", task_dir));
  double wait_ns = 0, on_cpu_ns = 0;
  int threads = 0;
  while (const dirent* e = readdir(dir)) {
    if (e->d_name[0] == '.') continue;
    const std::string path = absl::StrCat(task_dir, "/", e->d_name, "/schedstat");
    FILE* f = std::fopen(path.c_str(), "r");
    if (f == nullptr) continue;  // the thread ended since readdir
    unsigned long long on_cpu = 0, waited = 0;
    if (std::fscanf(f, "%llu %llu", &on_cpu, &waited) == 2) {
      wait_ns += static_cast<double>(waited);
      on_cpu_ns += static_cast<double>(on_cpu);
      ++threads;
    }
    std::fclose(f);
  }
  closedir(dir);
  if (threads == 0) return absl::UnavailableError(absl::StrCat("no readable schedstat under ", task_dir));
  // A kernel without scheduler statistics (sched_info off) writes zeros: no time on a CPU at all.
  if (on_cpu_ns == 0) return absl::UnavailableError(absl::StrCat("schedstat under ", task_dir, " is all zeros"));
  return wait_ns / 1e6;
}

absl::StatusOr<double> ProcessRunQueueWaitMs() { return RunQueueWaitMsIn("/proc/self/task"); }

}  // namespace kvgrid
