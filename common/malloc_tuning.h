// Process-wide malloc settings for inference programs (kvgrid, the benchmarks).
#pragma once

namespace kvgrid {

// Keeps freed memory in the heap for reuse instead of returning it to the kernel. A forward pass
// allocates and frees the same few-MB activations over and over; with glibc's defaults each is a
// fresh mmap whose pages fault in (zeroed) on first touch. Measured on the 512-token Pythia-70M
// prefill (2-core VM): page faults 256k -> 32k over a benchmark run, CPU time -20%. Memory
// freed is kept by the process (its peak RSS does not change). glibc only; no-op elsewhere.
void RetainFreedMemoryForReuse();

// Returns the free memory the heap retained to the kernel (malloc_trim), so that the resident set
// holds only live data again. Generation timing calls it once at the start of each run, so that
// one run's retained activations do not count in the next run's peak RSS.
void ReleaseRetainedMemory();

}  // namespace kvgrid
