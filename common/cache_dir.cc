#include "common/cache_dir.h"

#include <cstdlib>

namespace kvgrid {

std::string KvgridCacheDir() {
  auto env = [](const char* name) {
    const char* v = std::getenv(name);
    return v == nullptr ? std::string() : std::string(v);
  };
  if (std::string root = env("KVGRID_CACHE"); !root.empty()) return root;
  if (std::string xdg = env("XDG_CACHE_HOME"); !xdg.empty()) return xdg + "/kvgrid";
  std::string home = env("HOME");
  return (home.empty() ? std::string("/tmp") : home) + "/.cache/kvgrid";
}

}  // namespace kvgrid
