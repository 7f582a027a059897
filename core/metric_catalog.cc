#include "core/metric_catalog.h"

namespace kvgrid {

const std::vector<MetricDef>& MetricCatalog() {
  using namespace metric;  // NOLINT: the list below is the catalog
  static const std::vector<MetricDef> kAll = {
      kPpl, kPplStderr, kNllMean, kScoredTokens, kWallMs, kNll,
      kTtftMs, kTpotMs, kThroughputTokS, kTotalThroughputTokS, kPrefillTokS, kDecodeStepMs,
      kPeakMemoryBytes, kPrefillPeakRssBytes, kDecodePeakRssBytes, kPrefillPeakAllocatedBytes,
      kDecodePeakAllocatedBytes, kPeakReservedBytes, kDecodeScoringMs, kCpuWaitPct, kRetimedRepeats,
      kDisturbedRepeats, kRepeats,
      kBaselineTtftMs, kBaselineTpotMs, kBaselineThroughputTokS,
      kDeltaTtftPct, kDeltaTpotPct, kDeltaThroughputPct,
      kKvBytesPeak, kKvBytesEnd, kKvBytesLiveEnd, kKvTokensMax, kScoringMs, kDatasetTokens, kTokenizeMs,
      kNoopMs, kElapsedMs};
  return kAll;
}

const MetricDef* FindMetricDef(std::string_view name) {
  for (const MetricDef& m : MetricCatalog()) {
    if (m.name == name) return &m;
  }
  return nullptr;
}

std::string CiLowName(const MetricDef& delta) { return std::string(delta.name) + "_ci_low"; }
std::string CiHighName(const MetricDef& delta) { return std::string(delta.name) + "_ci_high"; }

std::string MetricCatalogMarkdown() {
  std::string out = "| metric | unit | better | workload | meaning |\n| --- | --- | --- | --- | --- |\n";
  for (const MetricDef& m : MetricCatalog()) {
    const char* better = m.better == Better::kLower ? "lower" : m.better == Better::kHigher ? "higher" : "—";
    out += "| `" + std::string(m.name) + "` | " + (m.unit.empty() ? std::string("—") : std::string(m.unit)) +
           " | " + better + " | " + std::string(m.workload) + " | " + std::string(m.meaning) + " |\n";
  }
  return out;
}

}  // namespace kvgrid
