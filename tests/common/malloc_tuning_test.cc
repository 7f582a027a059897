// RetainFreedMemoryForReuse / ReleaseRetainedMemory do what the engine's speed and the peak-RSS
// metric rely on. ctest runs every test in its own process, so the process-wide settings made
// here reach no other test.
#include "common/malloc_tuning.h"

#include <gtest/gtest.h>
#include <sys/resource.h>
#include <unistd.h>

#include <cstdint>
#include <cstdlib>
#include <cstring>
#include <fstream>
#include <vector>

namespace kvgrid {
namespace {

constexpr int64_t kMiB = 1 << 20;

int64_t ResidentBytes() {
  std::ifstream in("/proc/self/statm");
  int64_t size = 0, resident = 0;
  in >> size >> resident;
  return resident * sysconf(_SC_PAGESIZE);
}

// Allocates, touches and frees eight 4 MiB blocks: activation-sized, above glibc's default
// mmap threshold (128 KiB), so by default each is unmapped again on free.
void AllocateTouchAndFree() {
  std::vector<char*> blocks;
  volatile char sink = 0;
  for (int i = 0; i < 8; ++i) {
    char* p = static_cast<char*>(std::malloc(4 * kMiB));
    ASSERT_NE(p, nullptr);
    std::memset(p, i + 1, 4 * kMiB);
    blocks.push_back(p);
  }
  for (char* p : blocks) sink = sink + p[kMiB];
  for (auto it = blocks.rbegin(); it != blocks.rend(); ++it) std::free(*it);
}

TEST(MallocTuning, FreedActivationsStayResidentUntilReleased) {
  RetainFreedMemoryForReuse();
  const int64_t before = ResidentBytes();
  AllocateTouchAndFree();
  const int64_t retained = ResidentBytes() - before;
  EXPECT_GT(retained, 24 * kMiB) << "freed blocks should stay in the heap for reuse";
  ReleaseRetainedMemory();
  EXPECT_LT(ResidentBytes() - before, 8 * kMiB) << "malloc_trim should hand them back";
}

int64_t MinorPageFaults() {
  rusage usage{};
  getrusage(RUSAGE_SELF, &usage);
  return usage.ru_minflt;
}

// What the speed-up is made of: once the heap holds the blocks, allocating them again touches
// pages that are already mapped, so a round costs no page faults.
TEST(MallocTuning, ReusedBlocksCauseNoPageFaults) {
  RetainFreedMemoryForReuse();
  AllocateTouchAndFree();
  const int64_t faults = MinorPageFaults();
  for (int round = 0; round < 5; ++round) AllocateTouchAndFree();
  EXPECT_LT(MinorPageFaults() - faults, 100);
}

TEST(MallocTuning, WithoutTuningEveryRoundFaultsItsPagesIn) {
  // glibc's defaults, for contrast: each block is a fresh mmap whose 1024 pages fault in zeroed.
  const int64_t before = ResidentBytes();
  AllocateTouchAndFree();
  EXPECT_LT(ResidentBytes() - before, 8 * kMiB);
  const int64_t faults = MinorPageFaults();
  AllocateTouchAndFree();
  EXPECT_GT(MinorPageFaults() - faults, 4 * 1024);
}

}  // namespace
}  // namespace kvgrid
