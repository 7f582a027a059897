// Where kvgrid keeps what it makes or downloads itself (random models, dataset texts, worker
// result spools): $KVGRID_CACHE, else $XDG_CACHE_HOME/kvgrid, else ~/.cache/kvgrid. Hub files
// live in the Hugging Face cache instead (model/hub/hf_hub.h).
#pragma once

#include <string>

namespace kvgrid {

std::string KvgridCacheDir();

}  // namespace kvgrid
