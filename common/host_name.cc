#include "common/host_name.h"

#include <unistd.h>

namespace kvgrid {

std::string HostName() {
  char buf[256] = {0};
  if (::gethostname(buf, sizeof(buf) - 1) != 0 || buf[0] == '\0') return "unknown";
  return buf;
}

}  // namespace kvgrid
