// exec: offloaded sockets without FD_CLOEXEC survive it, as kernel sockets do. Before the real
// exec the channel's three fds lose FD_CLOEXEC and a memfd (number in PNO_EXEC_STATE) describes
// every offloaded fd; the next image's constructor adopts the channel (no new attach: the engine
// sees the same connection, the same family, the same references) and closes the references of
// the fds the kernel closed (FD_CLOEXEC). A failed exec restores the flags: nothing changed.
#pragma once

#include <sys/mman.h>

#include <cstdio>
#include <cstring>
#include <optional>

#include "shim/internal.hh"
#include "shim/log.hh"

namespace pno::shim {

inline constexpr const char* kExecStateEnv = "PNO_EXEC_STATE";

/// In the new image's constructor: the exec state's fd when PNO_EXEC_STATE is set (the variable
/// is removed: still single-threaded, the program has not started).
std::optional<int> take_exec_state();

/// In the new image's constructor: takes the previous image's attachment and offloaded fds.
bool adopt_after_exec(int sfd);

/// Whether a program started with environment `env` loads this shim (and does not disable it).
bool env_loads_shim(char* const* env);

/// Writes the exec state into a new memfd (not close-on-exec): its fd, or -1. Only system calls
/// and the stack: exec may run in a vfork() child, which shares our memory.
int write_exec_state(State* st, const HostChannel::ExecFds& fds, std::uint32_t* n_kept);

/// Runs `do_exec(envp)` so that offloaded sockets without FD_CLOEXEC survive it (see above).
/// `envp` null: the current environment.
template <typename Exec>
int exec_keeping_sockets(char* const* envp, Exec&& do_exec) {
  State* st = state();
  HostChannel* ch = st != nullptr ? attached_channel(st) : nullptr;
  char* const* env = envp != nullptr ? envp : environ;
  if (ch == nullptr) return do_exec(env);  // nothing offloaded
  if (!env_loads_shim(env)) {
    // The next image cannot reach the engine: close this process's references as exit would.
    release_all_refs();
    return do_exec(env);
  }
  HostChannel::ExecFds fds;
  std::uint32_t kept = 0;
  int sfd = -1;
  if (ch->prepare_exec(fds)) {
    sfd = write_exec_state(st, fds, &kept);
    if (sfd < 0) ch->exec_failed();
  }
  if (sfd < 0) {
    log(LogLevel::warn, "exec: cannot hand the offloaded sockets to the next image (%s): they are closed",
        std::strerror(errno));
    release_all_refs();
    return do_exec(env);
  }
  // The environment plus PNO_EXEC_STATE, on the stack (no malloc: this may be a vfork() child).
  std::size_t n = 0;
  while (env != nullptr && env[n] != nullptr) ++n;
  char var[48];
  std::snprintf(var, sizeof var, "%s=%d", kExecStateEnv, sfd);
  std::size_t bytes = (n + 2) * sizeof(char*);
  bool mapped = bytes > 256 * 1024;
  void* mem = mapped ? ::mmap(nullptr, bytes, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0)
                     : __builtin_alloca(bytes);
  int r = -1;
  int e = ENOMEM;
  if (mem != MAP_FAILED) {
    auto** nenv = static_cast<char**>(mem);
    std::size_t k = 0;
    std::size_t klen = std::strlen(kExecStateEnv);
    for (std::size_t i = 0; i < n; ++i) {
      if (std::strncmp(env[i], kExecStateEnv, klen) == 0 && env[i][klen] == '=') continue;
      nenv[k++] = env[i];
    }
    nenv[k++] = var;
    nenv[k] = nullptr;
    r = do_exec(nenv);
    e = errno;
    if (mapped) ::munmap(mem, bytes);
  }
  // The exec failed: everything as it was.
  PNO_REAL(close)(sfd);
  ch->exec_failed();
  errno = e;
  return r;
}

}  // namespace pno::shim
