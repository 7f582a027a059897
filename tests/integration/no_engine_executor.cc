// The integration tests drive a kvgrid binary built without LibTorch (kvgrid_rpc_cli): the
// scheduler is exercised with the noop executor, so the engine executor is absent here.
#include "worker/run_executor.h"

namespace kvgrid {

std::unique_ptr<RunExecutor> MakeEngineExecutor(const std::string&, int) { return nullptr; }

}  // namespace kvgrid
