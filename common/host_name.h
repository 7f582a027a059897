// This machine's host name (gethostname), "unknown" when it cannot be read: recorded with every
// result and part of worker ids.
#pragma once

#include <string>

namespace kvgrid {

std::string HostName();

}  // namespace kvgrid
