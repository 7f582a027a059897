// Which kvgrid code this binary is: recorded with every result (environment "kvgrid_commit").
#pragma once

namespace kvgrid {

// The git commit the binary was built from, taken at build time (cmake/build_info.cmake), with
// "-dirty" when tracked files had uncommitted changes; "unknown" outside a git checkout.
const char* KvgridCommit();

}  // namespace kvgrid
