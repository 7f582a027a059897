#include "worker/daemon/signal_watcher.h"

#include <fcntl.h>
#include <signal.h>
#include <unistd.h>

#include <cerrno>

namespace kvgrid {
namespace {

int g_pipe[2] = {-1, -1};

void Handler(int signo) {
  const int saved = errno;
  unsigned char b = static_cast<unsigned char>(signo);
  if (g_pipe[1] >= 0) {
    ssize_t n = ::write(g_pipe[1], &b, 1);
    (void)n;
  }
  errno = saved;
}

}  // namespace

SignalWatcher::SignalWatcher(std::function<void(int, int)> on_signal)
    : on_signal_(std::move(on_signal)) {
  if (::pipe(g_pipe) != 0) {
    g_pipe[0] = g_pipe[1] = -1;
    return;
  }
  ::fcntl(g_pipe[0], F_SETFD, FD_CLOEXEC);
  ::fcntl(g_pipe[1], F_SETFD, FD_CLOEXEC);
  ::fcntl(g_pipe[1], F_SETFL, O_NONBLOCK);
  struct sigaction sa = {};
  sa.sa_handler = Handler;
  sigemptyset(&sa.sa_mask);
  sa.sa_flags = SA_RESTART;
  ::sigaction(SIGINT, &sa, nullptr);
  ::sigaction(SIGTERM, &sa, nullptr);
  ::signal(SIGPIPE, SIG_IGN);
  const int read_fd = g_pipe[0];
  thread_ = std::thread([this, read_fd] {
    int count = 0;
    while (true) {
      unsigned char b = 0;
      ssize_t n = ::read(read_fd, &b, 1);
      if (n < 0 && errno == EINTR) continue;
      if (n <= 0) return;
      if (b == 0) return;  // the destructor's wake-up
      ++count;
      if (on_signal_) on_signal_(static_cast<int>(b), count);
    }
  });
}

SignalWatcher::~SignalWatcher() {
  ::signal(SIGINT, SIG_DFL);
  ::signal(SIGTERM, SIG_DFL);
  if (g_pipe[1] >= 0) {
    unsigned char zero = 0;
    ssize_t n = ::write(g_pipe[1], &zero, 1);
    (void)n;
  }
  if (thread_.joinable()) thread_.join();
  if (g_pipe[0] >= 0) ::close(g_pipe[0]);
  if (g_pipe[1] >= 0) ::close(g_pipe[1]);
  g_pipe[0] = g_pipe[1] = -1;
}

}  // namespace kvgrid
