// exec: the state an exec'ing image leaves for the next one (a memfd named by PNO_EXEC_STATE),
// and its adoption by the next image's constructor (see exec.hh).
#include "shim/exec.hh"

#include <dlfcn.h>
#include <sys/syscall.h>

#include <algorithm>
#include <cstdlib>
#include <span>

namespace pno::shim {
namespace {

constexpr std::uint32_t kExecMagic = 0x706e6f78;  // "pnox"
constexpr std::uint32_t kExecVersion = 2;  // 2: ExecFds carries the process table entry

struct ExecHeader {
  std::uint32_t magic = kExecMagic;
  std::uint32_t version = kExecVersion;
  HostChannel::ExecFds fds;
  std::uint32_t n_waiters = 0;
  std::uint32_t waiters[64] = {};
  std::uint32_t n_socks = 0;
};

/// One offloaded fd of the exec'ing image: the engine socket and the shim's per-socket state.
/// `group` (the SockDesc index) joins fds that share one open file description (dup).
struct ExecSock {
  std::int32_t fd;
  std::uint32_t group;
  std::uint32_t sock;
  std::uint32_t cloexec;
  std::uint32_t nonblock;
  std::uint32_t listening;
  std::uint32_t conn_state;
  std::uint32_t quickack;
  std::int32_t linger_on, linger_secs;
  std::int64_t rcvtimeo_us, sndtimeo_us;
};

/// Our own file name (e.g. "libpno.so"), to tell whether the next image preloads us.
const char* self_name() {
  static const char* name = [] {
    Dl_info di{};
    if (::dladdr(reinterpret_cast<void*>(&self_name), &di) == 0 || di.dli_fname == nullptr) return "libpno.so";
    const char* slash = std::strrchr(di.dli_fname, '/');
    return slash != nullptr ? slash + 1 : di.dli_fname;
  }();
  return name;
}

}  // namespace

std::optional<int> take_exec_state() {
  const char* xs = std::getenv(kExecStateEnv);
  if (xs == nullptr) return std::nullopt;
  int sfd = std::atoi(xs);
  ::unsetenv(kExecStateEnv);  // still single-threaded: the program has not started
  return sfd;
}

bool adopt_after_exec(int sfd) {
  ExecHeader h;
  if (sfd < 0 || ::pread(sfd, &h, sizeof h, 0) != static_cast<ssize_t>(sizeof h) || h.magic != kExecMagic ||
      h.version != kExecVersion || h.n_waiters > std::size(h.waiters)) {
    if (sfd >= 0) PNO_REAL(close)(sfd);
    log(LogLevel::warn, "%s does not describe an exec'ing image's sockets: ignored", kExecStateEnv);
    return false;
  }
  char why[256] = {};
  std::unique_ptr<HostChannel> ch;
  {
    InChannel guard;
    ch = HostChannel::adopt(h.fds, std::span<const std::uint32_t>(h.waiters, h.n_waiters),
                            std::span<char>(why, sizeof why - 1));
  }
  State* st = ch ? init_state() : nullptr;
  if (st == nullptr) {
    PNO_REAL(close)(sfd);
    // The inherited sockets cannot be reached; their references go with the process family.
    log(LogLevel::error, "cannot take over the engine attachment after exec (%s): using the kernel TCP stack",
        ch ? "cannot map the descriptor tables" : why);
    return false;
  }
  install_channel(st, std::move(ch));
  InChannel guard;  // g_state is not published yet, but be explicit: channel calls go to libc
  std::uint32_t kept = 0, closed = 0;
  off_t off = sizeof h;
  for (std::uint32_t i = 0; i < h.n_socks; ++i, off += sizeof(ExecSock)) {
    ExecSock r;
    if (::pread(sfd, &r, sizeof r, off) != static_cast<ssize_t>(sizeof r)) break;
    // FD_CLOEXEC: the kernel closed the placeholder, so this image drops the reference.
    if (r.cloexec != 0 || !st->fds.in_range(r.fd) || PNO_REAL(fcntl)(r.fd, F_GETFD) < 0) {
      st->ch->close(r.sock);
      ++closed;
      continue;
    }
    // Another fd of the same description adopted already?
    std::uint32_t idx = 0;
    for (int fd = 0; fd < st->fds.high_water() && idx == 0; ++fd) {
      FdRef fr = st->fds.get(fd);
      if (fr.kind == FdKind::socket && st->socks[fr.index].sock.load() == r.sock) idx = fr.index;
    }
    if (idx == 0) {
      idx = st->socks.alloc();
      if (idx == 0) {
        st->ch->close(r.sock);
        ++closed;
        continue;
      }
      SockDesc& d = st->socks[idx];
      d.reset();
      d.sock.store(r.sock);
      d.nonblock.store(r.nonblock);
      d.listening.store(r.listening);
      d.conn_state.store(r.conn_state);
      d.quickack.store(r.quickack);
      d.linger_on.store(r.linger_on);
      d.linger_secs.store(r.linger_secs);
      d.rcvtimeo_us.store(r.rcvtimeo_us);
      d.sndtimeo_us.store(r.sndtimeo_us);
    }
    st->socks[idx].refs.fetch_add(1);
    st->fds.set(r.fd, FdKind::socket, idx);
    ++kept;
  }
  PNO_REAL(close)(sfd);
  publish_state(st, true);
  if (log_enabled(LogLevel::info)) {
    log(LogLevel::info, "took the engine attachment over exec: %u sockets kept, %u closed (FD_CLOEXEC)", kept,
        closed);
  }
  return true;
}

/// Whether a program started with environment `env` loads this shim (and does not disable it).
bool env_loads_shim(char* const* env) {
  bool preload = false;
  for (char* const* e = env; e != nullptr && *e != nullptr; ++e) {
    if (std::strncmp(*e, "LD_PRELOAD=", 11) == 0 && std::strstr(*e + 11, self_name()) != nullptr) preload = true;
    if (std::strcmp(*e, "PNO_DISABLE=1") == 0) return false;
  }
  return preload;
}

/// Writes the exec state into a new memfd (not close-on-exec): its fd, or -1. Only system calls
/// and the stack: exec may run in a vfork() child, which shares our memory.
int write_exec_state(State* st, const HostChannel::ExecFds& fds, std::uint32_t* n_kept) {
  int sfd = static_cast<int>(PNO_REAL(syscall)(SYS_memfd_create, "pno-exec", 0));
  if (sfd < 0) return -1;
  ExecHeader h;
  h.fds = fds;
  h.n_waiters = static_cast<std::uint32_t>(st->ch->waiter_indices(std::span<std::uint32_t>(h.waiters)));
  ExecSock batch[32];
  std::size_t nb = 0;
  off_t off = sizeof h;
  bool ok = true;
  auto flush = [&] {
    auto bytes = static_cast<ssize_t>(nb * sizeof(ExecSock));
    if (nb > 0 && ::pwrite(sfd, batch, static_cast<std::size_t>(bytes), off) != bytes) ok = false;
    off += bytes;
    nb = 0;
  };
  int hw = st->fds.high_water();
  for (int fd = 0; fd < hw; ++fd) {
    SockRef r = offloaded(st, fd);
    if (!r) continue;
    int fdfl = PNO_REAL(fcntl)(fd, F_GETFD);
    ExecSock& x = batch[nb++];
    x.fd = fd;
    x.group = r.index;
    x.sock = r.s;
    x.cloexec = (fdfl < 0 || (fdfl & FD_CLOEXEC) != 0) ? 1 : 0;
    x.nonblock = r.d->nonblock.load();
    x.listening = r.d->listening.load();
    x.conn_state = r.d->conn_state.load();
    x.quickack = r.d->quickack.load();
    x.linger_on = r.d->linger_on.load();
    x.linger_secs = r.d->linger_secs.load();
    x.rcvtimeo_us = r.d->rcvtimeo_us.load();
    x.sndtimeo_us = r.d->sndtimeo_us.load();
    if (x.cloexec == 0) ++*n_kept;
    ++h.n_socks;
    if (nb == std::size(batch)) flush();
  }
  flush();
  if (!ok || ::pwrite(sfd, &h, sizeof h, 0) != static_cast<ssize_t>(sizeof h)) {
    PNO_REAL(close)(sfd);
    return -1;
  }
  return sfd;
}

}  // namespace pno::shim
