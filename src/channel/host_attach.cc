// The host end of the channel (see host.hh, contract.hh and README.md): attach, the region's
// mapping, the channel's own descriptors (kept high, moved on request) and the hand-over across exec.
#include <fcntl.h>
#include <sys/resource.h>
#include <sys/stat.h>
#include <sys/un.h>

#include <algorithm>
#include <cerrno>
#include <cstdio>
#include <cstdlib>
#include <cstring>

#include "channel/host_impl.hh"

namespace pno::channel {

namespace {

void say(std::span<char> why, const char* fmt, const char* a = "", long b = 0, long d = 0) {
  if (why.empty()) return;
  std::snprintf(why.data(), why.size(), fmt, a, b, d);
}

/// Whose engine may carry this process's traffic: root's, our own user's (an engine run by the
/// same user, as tests and benchmarks do), or the uid named by PNO_ENGINE_UID. secure_getenv: a
/// set-uid program does not take the variable from whoever started it.
bool trusted_engine_uid(uid_t uid) {
  if (uid == 0 || uid == ::geteuid()) return true;
  const char* v = ::secure_getenv("PNO_ENGINE_UID");
  if (v == nullptr || *v == '\0') return false;
  char* end = nullptr;
  errno = 0;
  const unsigned long want = std::strtoul(v, &end, 10);
  return errno == 0 && *end == '\0' && want == uid;
}

bool set_cloexec(int fd, bool on) {
  const int fl = fcntl(fd, F_GETFD);
  if (fl < 0) return false;
  return fcntl(fd, F_SETFD, on ? (fl | FD_CLOEXEC) : (fl & ~FD_CLOEXEC)) == 0;
}

}  // namespace

int dup_high(int fd) {
  rlimit rl{};
  long top = 1024;
  if (getrlimit(RLIMIT_NOFILE, &rl) == 0 && rl.rlim_cur != RLIM_INFINITY) top = static_cast<long>(rl.rlim_cur);
  top = std::min<long>(top, 1 << 20);
  const long min = std::max<long>(top - 64, 3);
  int nfd = fcntl(fd, F_DUPFD_CLOEXEC, static_cast<int>(min));
  if (nfd < 0) nfd = fcntl(fd, F_DUPFD_CLOEXEC, 3);
  return nfd;
}

int move_high(int fd) {
  const int nfd = dup_high(fd);
  if (nfd < 0) {
    fcntl(fd, F_SETFD, FD_CLOEXEC);
    return fd;
  }
  ::close(fd);
  return nfd;
}

bool EngineInfo::is_local(Ipv4Addr a) const {
  for (std::uint8_t i = 0; i < n_addrs && i < addrs.size(); ++i) {
    if (addrs[i].addr == a) return true;
  }
  return false;
}

bool EngineInfo::routes(Ipv4Addr a) const {
  for (std::uint8_t i = 0; i < n_addrs && i < addrs.size(); ++i) {
    if (addrs[i].contains(a)) return true;
  }
  return false;
}

// ------------------------------------------------------------------------------------- HostChannel

HostChannel::HostChannel() : impl_(std::make_unique<Impl>()) {}
HostChannel::~HostChannel() = default;

bool HostChannel::Impl::map_region(std::uint64_t region_bytes, const char* path, std::span<char> why) {
  void* map = mmap(nullptr, region_bytes, PROT_READ | PROT_WRITE, MAP_SHARED, region_fd, 0);
  if (map == MAP_FAILED) {
    std::snprintf(why.data(), why.size(), "cannot map the engine's region (%llu bytes): %s",
                  static_cast<unsigned long long>(region_bytes), std::strerror(errno));
    return false;
  }
  base = static_cast<std::byte*>(map);
  bytes = region_bytes;
  hdr = reinterpret_cast<c::RegionHeader*>(base);
  std::memcpy(&geo, hdr, sizeof(geo));
  // The offsets are used as the engine published them, once they are known to lie inside what
  // was mapped and not to overlap: the host does not recompute the engine's layout.
  if (const char* bad = c::validate(geo, region_bytes); bad != nullptr) {
    std::snprintf(why.data(), why.size(), "engine at %s: unusable region (%s) for ABI version %u", path, bad,
                  c::kAbiVersion);
    return false;
  }
  if ((geo.features & ~c::kFeaturesKnown) != 0) {
    std::snprintf(why.data(), why.size(), "engine at %s: region uses features %#llx this host does not know", path,
                  static_cast<unsigned long long>(geo.features));
    return false;
  }
  pid = static_cast<std::uint32_t>(getpid());
  warmed = std::make_unique<std::atomic<bool>[]>(geo.max_sockets);
  EngineInfo& e = info;
  e.abi_version = geo.abi_version;
  e.max_sockets = geo.max_sockets;
  e.stream_ring_bytes = geo.stream_ring_bytes;
  e.n_addrs = static_cast<std::uint8_t>(std::min<std::uint32_t>(geo.n_addrs, 8));
  for (std::uint8_t i = 0; i < e.n_addrs; ++i) {
    e.addrs[i] = Ipv4Cidr{Ipv4Addr{geo.addrs[i].addr}, geo.addrs[i].prefix_len};
  }
  return true;
}

std::unique_ptr<HostChannel> HostChannel::attach(const char* path, std::span<char> why) {
  if (path == nullptr) path = c::kDefaultSocketPath;
  sockaddr_un sa{};
  sa.sun_family = AF_UNIX;
  if (std::strlen(path) >= sizeof(sa.sun_path)) {
    say(why, "engine socket path too long: %s", path);
    return nullptr;
  }
  std::strcpy(sa.sun_path, path);
  const int fd = ::socket(AF_UNIX, SOCK_SEQPACKET | SOCK_CLOEXEC, 0);
  if (fd < 0) {
    say(why, "socket(AF_UNIX): %s", std::strerror(errno));
    return nullptr;
  }
  std::unique_ptr<HostChannel> ch(new HostChannel());  // private constructor: make_unique cannot reach it
  Impl& im = *ch->impl_;
  im.conn_fd = fd;
  if (::connect(fd, reinterpret_cast<const sockaddr*>(&sa), sizeof(sa)) != 0) {
    const int e = errno;
    std::snprintf(why.data(), why.size(), "cannot reach the engine at %s: %s", path, std::strerror(e));
    return nullptr;
  }
  // Whoever bound the path answers it: the engine's credentials (SO_PEERCRED, fixed at its
  // listen()) are checked before it gets a byte of this process's traffic.
  ucred peer{};
  socklen_t plen = sizeof(peer);
  if (::getsockopt(fd, SOL_SOCKET, SO_PEERCRED, &peer, &plen) != 0) {
    std::snprintf(why.data(), why.size(), "engine at %s: cannot read its credentials: %s", path, std::strerror(errno));
    return nullptr;
  }
  if (!trusted_engine_uid(peer.uid)) {
    std::snprintf(why.data(), why.size(),
                  "engine at %s runs as uid %u, which is not root, this user (uid %u) or PNO_ENGINE_UID: "
                  "not handing it this process's traffic",
                  path, static_cast<unsigned>(peer.uid), static_cast<unsigned>(::geteuid()));
    std::fprintf(stderr, "pno: %s\n", why.data());
    return nullptr;
  }
  c::AttachRequest req;
  req.pid = static_cast<std::uint32_t>(getpid());
  req.features = c::kFeaturesKnown;
  if (::send(fd, &req, sizeof(req), MSG_NOSIGNAL) != static_cast<ssize_t>(sizeof(req))) {
    std::snprintf(why.data(), why.size(), "engine at %s: send: %s", path, std::strerror(errno));
    return nullptr;
  }
  c::AttachReply rep;
  pollfd p{fd, POLLIN, 0};
  if (::poll(&p, 1, 5000) != 1) {
    std::snprintf(why.data(), why.size(), "engine at %s did not answer the attach request", path);
    return nullptr;
  }
  int fds[2] = {-1, -1};
  const ssize_t r = channel::recv_with_fds(fd, &rep, sizeof(rep), fds, 0);
  auto close_fds = [&] {
    for (int f : fds) {
      if (f >= 0) ::close(f);
    }
  };
  // A refusal from an engine of another version still carries the prefix up to `why`.
  constexpr auto kPrefix = static_cast<ssize_t>(offsetof(c::AttachReply, features));
  if (r < kPrefix || rep.magic != c::kAttachMagic ||
      (rep.status == c::AttachStatus::ok && r != static_cast<ssize_t>(sizeof(rep)))) {
    close_fds();
    std::snprintf(why.data(), why.size(), "engine at %s sent a malformed attach reply", path);
    return nullptr;
  }
  rep.why[sizeof(rep.why) - 1] = '\0';
  if (rep.status != c::AttachStatus::ok) {
    close_fds();
    if (rep.status == c::AttachStatus::version_mismatch) {
      std::snprintf(why.data(), why.size(), "engine at %s refused ABI version %u: engine speaks %u (%s)", path,
                    c::kAbiVersion, rep.abi_version, rep.why);
    } else {
      std::snprintf(why.data(), why.size(), "engine at %s refused the attach: %s", path, rep.why);
    }
    std::fprintf(stderr, "pno: %s\n", why.data());
    return nullptr;
  }
  if ((rep.features & ~req.features) != 0) {
    close_fds();
    std::snprintf(why.data(), why.size(), "engine at %s granted features %#llx it was not asked for", path,
                  static_cast<unsigned long long>(rep.features));
    return nullptr;
  }
  if (fds[0] < 0 || fds[1] < 0 || rep.region_bytes < c::kHeaderBytes) {
    close_fds();
    std::snprintf(why.data(), why.size(), "engine at %s sent no region", path);
    return nullptr;
  }
  im.doorbell_fd = move_high(fds[1]);
  im.conn_fd = move_high(im.conn_fd.load());
  // The region fd is kept (close-on-exec, high): exec() hands it to the next image (adopt()).
  im.region_fd = move_high(fds[0]);
  if (!im.map_region(rep.region_bytes, path, why)) return nullptr;
  im.proc = c::kProcFirst;  // the engine made it live for our pid
  return ch;
}

const EngineInfo& HostChannel::engine() const { return impl_->info; }
bool HostChannel::alive() const { return impl_->check_alive(); }
int HostChannel::control_fd() const { return impl_->conn_fd; }

bool HostChannel::owns_fd(int fd) const {
  Impl& im = *impl_;
  if (fd < 0) return false;
  if (fd == im.conn_fd || fd == im.doorbell_fd || fd == im.region_fd) return true;
  LocalLock lk(im.waiters_lock);
  for (const auto& w : im.waiters) {
    if (w->fd() == fd) return true;
  }
  return false;
}

int HostChannel::relocate_fd(int fd) {
  Impl& im = *impl_;
  if (fd < 0) {
    errno = EBADF;
    return -1;
  }
  // The duplicate becomes the channel's number (`publish`), then the old one is closed once
  // `settle` has let its users finish.
  auto renumber = [&](auto publish, auto settle) {
    const int nfd = dup_high(fd);
    if (nfd < 0) return -1;
    publish(nfd);
    im.relocations.fetch_add(1, std::memory_order_acq_rel);
    settle(nfd);
    ::close(fd);
    return nfd;
  };
  auto into = [](std::atomic<int>& where) {
    return [&where](int nfd) { where.store(nfd, std::memory_order_seq_cst); };
  };
  auto at_once = [](int) {};
  if (fd == im.conn_fd.load()) {
    // The ctl lock keeps a waiter registration (sendmsg + recv on conn_fd) off the number.
    RegionLock lk(im.hdr->ctl_lock.owner, im.pid);
    return renumber(into(im.conn_fd), at_once);
  }
  if (fd == im.region_fd.load()) {
    // Used only by exec (prepare_exec), which reads the number when it runs.
    return renumber(into(im.region_fd), at_once);
  }
  if (fd == im.doorbell_fd.load()) {
    // A notify() that loaded the old number finishes its write before the number is released.
    return renumber(into(im.doorbell_fd), [&](int) {
      while (im.doorbell_users.load(std::memory_order_seq_cst) != 0) sched_yield();
    });
  }
  LocalLock lk(im.waiters_lock);
  for (const auto& w : im.waiters) {
    if (w->fd() != fd) continue;
    // Wake the owner if it sleeps (on the same open file): it re-checks and rebuilds its poll set
    // with the new number. Waiters tolerate spurious wake-ups.
    return renumber([&](int nfd) { __atomic_store_n(&w->fd_, nfd, __ATOMIC_SEQ_CST); },
                    [](int nfd) {
                      const std::uint64_t one = 1;
                      [[maybe_unused]] ssize_t r = ::write(nfd, &one, sizeof(one));
                    });
  }
  errno = EBADF;
  return -1;
}

// ------------------------------------------------------------------------------------------- exec

bool HostChannel::prepare_exec(ExecFds& out) {
  Impl& im = *impl_;
  out = ExecFds{im.conn_fd, im.region_fd, im.doorbell_fd, im.own_proc()};
  if (im.conn_fd < 0 || im.region_fd < 0 || im.doorbell_fd < 0) return false;
  if (set_cloexec(im.conn_fd, false) && set_cloexec(im.region_fd, false) && set_cloexec(im.doorbell_fd, false)) {
    return true;
  }
  exec_failed();
  return false;
}

void HostChannel::exec_failed() {
  Impl& im = *impl_;
  for (int fd : {im.conn_fd.load(), im.region_fd.load(), im.doorbell_fd.load()}) {
    if (fd >= 0) set_cloexec(fd, true);
  }
}

std::unique_ptr<HostChannel> HostChannel::adopt(ExecFds fds, std::span<const std::uint32_t> stale_waiters,
                                                std::span<char> why) {
  std::unique_ptr<HostChannel> ch(new HostChannel());
  Impl& im = *ch->impl_;
  // Owned from here on: the destructor closes them on failure.
  im.conn_fd = fds.conn;
  im.region_fd = fds.region;
  im.doorbell_fd = fds.doorbell;
  struct stat sb {};
  if (fds.conn < 0 || fds.region < 0 || fds.doorbell < 0 || !set_cloexec(fds.conn, true) ||
      !set_cloexec(fds.region, true) || !set_cloexec(fds.doorbell, true) || fstat(fds.region, &sb) != 0 ||
      sb.st_size < static_cast<off_t>(c::kHeaderBytes)) {
    std::snprintf(why.data(), why.size(), "the attachment inherited over exec is not usable");
    return nullptr;
  }
  if (!im.map_region(static_cast<std::uint64_t>(sb.st_size), "(inherited over exec)", why)) return nullptr;
  im.proc = fds.proc < im.geo.max_procs ? fds.proc : c::proc_shared(im.geo);  // same pid, same entry
  // The previous image's threads are gone: their waiters and any region lock they held.
  for (std::uint32_t i : stale_waiters) {
    if (i >= im.geo.max_waiters) continue;
    im.unarm(i);
    at(im.waiter(i).in_use).store(0, std::memory_order_release);
  }
  const std::uint32_t self = im.pid;
  auto unlock_mine = [&](std::uint32_t& w) {
    std::uint32_t expect = self;
    at(w).compare_exchange_strong(expect, 0, std::memory_order_acq_rel);
  };
  for (c::LockWord* l : {&im.hdr->cmd_lock, &im.hdr->cpl_lock, &im.hdr->kick_lock, &im.hdr->changed_lock,
                         &im.hdr->ctl_lock}) {
    unlock_mine(l->owner);
  }
  for (std::uint32_t i = 0; i < im.geo.max_sockets; ++i) {
    unlock_mine(im.slot(i).send_lock.owner);
    unlock_mine(im.slot(i).recv_lock.owner);
  }
  return ch;
}

}  // namespace pno::channel
