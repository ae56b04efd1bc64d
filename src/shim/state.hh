// The shim's process-wide state: the channel to the engine, the fd table and the object pools.
// Built once by the library constructor and never destroyed (threads of the application may still
// call in while the process exits).
#pragma once

#include <time.h>

#include <atomic>
#include <cstdint>
#include <memory>

#include "channel/host.hh"
#include "shim/epoll_logic.hh"
#include "shim/fd_table.hh"
#include "shim/options.hh"

namespace pno::shim {

using channel::HostChannel;
using channel::HostSocket;

inline constexpr int kMaxTrackedFds = 1 << 16;
inline constexpr std::uint32_t kMaxSockDescs = 1 << 16;
inline constexpr std::uint32_t kMaxEpolls = 1 << 14;
inline constexpr std::uint32_t kMaxMembers = 1 << 18;
/// How long blocking calls and waits poll the shared state before they sleep.
inline constexpr std::int64_t kSpinNs = 5'000;

struct State {
  std::unique_ptr<HostChannel> channel;
  HostChannel* ch = nullptr;
  Ipv4Cidr addr_copy[8]{};
  EngineAddrs addrs;
  FdTable fds;
  Pool<SockDesc> socks;
  Pool<EpollDesc> epolls;
  Pool<EpollMember> members;
  /// fd -> the member it was last added as, so epoll_ctl finds it without walking the list.
  Mapping<std::atomic<std::uint32_t>> member_hint;
  /// Bumped at every fork(): an epoll instance created under another value may have kernel entries
  /// another process added (EpollDesc::n_kernel cannot count those).
  std::atomic<std::uint32_t> fork_epoch{0};
  int internal_fd_base = 0;
};

/// Set once the engine is attached and the tables are ready; null in kernel-only mode.
extern std::atomic<State*> g_state;

/// Marks the calling thread as inside the channel: the channel's own close()/dup2() calls reach
/// the shim's interposed functions (they are the process's definitions) and must go to libc.
extern thread_local bool t_in_channel __attribute__((tls_model("initial-exec")));

class InChannel {
 public:
  InChannel() : prev_(t_in_channel) { t_in_channel = true; }
  ~InChannel() { t_in_channel = prev_; }
  InChannel(const InChannel&) = delete;
  InChannel& operator=(const InChannel&) = delete;

 private:
  bool prev_;
};

inline State* state() { return g_state.load(std::memory_order_acquire); }

inline std::int64_t now_ns() {
  timespec ts;
  ::clock_gettime(CLOCK_MONOTONIC, &ts);
  return static_cast<std::int64_t>(ts.tv_sec) * 1'000'000'000 + ts.tv_nsec;
}

}  // namespace pno::shim
