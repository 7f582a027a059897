// SIGINT/SIGTERM handling for long-running commands (coordinator, worker, run): the signal
// handler only writes the signal number to a pipe; a watcher thread reads it and calls the
// callback with the signal and how many termination signals arrived so far (1 = drain,
// 2 = stop now, ...). The callback runs on the watcher thread, never in the signal handler.
#pragma once

#include <functional>
#include <thread>

namespace kvgrid {

class SignalWatcher {
 public:
  // Installs handlers for SIGINT and SIGTERM (and ignores SIGPIPE). One instance per process.
  explicit SignalWatcher(std::function<void(int signo, int count)> on_signal);
  ~SignalWatcher();  // restores the default handlers and joins the thread
  SignalWatcher(const SignalWatcher&) = delete;
  SignalWatcher& operator=(const SignalWatcher&) = delete;

 private:
  std::function<void(int, int)> on_signal_;
  std::thread thread_;
};

}  // namespace kvgrid
