// The attach socket and the families' control connections: handshake, region, waiter registration.
#include <fcntl.h>
#include <sys/epoll.h>
#include <sys/eventfd.h>
#include <sys/mman.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/uio.h>
#include <sys/un.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <condition_variable>
#include <cstring>
#include <memory>
#include <mutex>
#include <span>
#include <string_view>
#include <thread>

#include "engine/host/impl.hh"

namespace pno::engine {

using namespace host;

namespace {

/// The queue of close_off_loop(): one detached thread closes what the loop hands it. The state is
/// shared with that thread, so a close that never returns keeps it alive past the service.
struct Closer {
  std::mutex m;
  std::condition_variable cv;
  std::vector<int> fds;

  static Closer& get() {
    static const std::shared_ptr<Closer> c = [] {
      auto s = std::make_shared<Closer>();
      std::thread([s] {
        std::vector<int> batch;
        for (;;) {
          {
            std::unique_lock lk(s->m);
            s->cv.wait(lk, [&] { return !s->fds.empty(); });
            batch.swap(s->fds);
          }
          for (int fd : batch) ::close(fd);
          batch.clear();
        }
      }).detach();
      return s;
    }();
    return *c;
  }
};

}  // namespace

void host::close_off_loop(int& fd) {
  if (fd < 0) return;
  Closer& c = Closer::get();
  {
    std::lock_guard lk(c.m);  // held by the closer only to swap the vector
    c.fds.push_back(fd);
  }
  c.cv.notify_one();
  fd = -1;
}

bool host::is_nonblocking_eventfd(int fd) {
  // The file's kind is what /proc shows for its anon inode (eventfd_fops has no other name);
  // readlink() never blocks on the file itself.
  char path[48], link[32] = {};
  std::snprintf(path, sizeof(path), "/proc/self/fd/%d", fd);
  const ssize_t n = ::readlink(path, link, sizeof(link) - 1);
  constexpr std::string_view kEventfd = "anon_inode:[eventfd]";
  if (n != static_cast<ssize_t>(kEventfd.size()) || kEventfd != std::string_view(link, static_cast<std::size_t>(n))) {
    return false;
  }
  const int fl = ::fcntl(fd, F_GETFL);
  return fl >= 0 && (fl & O_NONBLOCK) != 0;
}

Errc HostService::Impl::listen_socket() {
  sockaddr_un sa{};
  sa.sun_family = AF_UNIX;
  if (cfg.socket_path.size() >= sizeof(sa.sun_path)) return Errc::inval;
  std::strcpy(sa.sun_path, cfg.socket_path.c_str());
  // The directory (default /run/pno) may not exist yet; one level is created.
  if (const auto slash = cfg.socket_path.rfind('/'); slash != std::string::npos && slash > 0) {
    ::mkdir(cfg.socket_path.substr(0, slash).c_str(), 0755);
  }
  listen_fd = ::socket(AF_UNIX, SOCK_SEQPACKET | SOCK_CLOEXEC | SOCK_NONBLOCK, 0);
  if (listen_fd < 0) return static_cast<Errc>(errno);
  ::unlink(sa.sun_path);  // a stale socket of an engine that died
  const mode_t old = ::umask(cfg.allow_any_uid ? 0 : 077);
  const int rb = ::bind(listen_fd, reinterpret_cast<const sockaddr*>(&sa), sizeof(sa));
  ::umask(old);
  if (rb != 0 || ::listen(listen_fd, 128) != 0) {
    const int e = errno;
    log("cannot listen on %s: %s", sa.sun_path, std::strerror(e));
    close_fd(listen_fd);
    return static_cast<Errc>(e);
  }
  epoll_event ev{};
  ev.events = EPOLLIN;
  ev.data.u64 = kTagListener;
  epoll_ctl(epfd, EPOLL_CTL_ADD, listen_fd, &ev);
  reserve.fd = ::open("/dev/null", O_RDONLY | O_CLOEXEC);
  log("listening on %s (ABI version %u)", sa.sun_path, c::kAbiVersion);
  return Errc::ok;
}

void HostService::Impl::accept_attaches() {
  for (;;) {
    const int fd = ::accept4(listen_fd, nullptr, nullptr, SOCK_CLOEXEC | SOCK_NONBLOCK);
    if (fd < 0) {
      // Out of descriptors, the pending connection stays and the listener stays readable: the
      // loop would never sleep. Shed it with the reserve descriptor (libev's and nginx's way),
      // else stop polling the listener for a while.
      if ((errno == EMFILE || errno == ENFILE) && !shed_one()) {
        epoll_ctl(epfd, EPOLL_CTL_DEL, listen_fd, nullptr);
        listener_paused = true;
        listener_resume = now + std::chrono::milliseconds(100);
        log("out of descriptors: not accepting attach connections for 100 ms");
        return;
      }
      if (errno == EMFILE || errno == ENFILE) continue;
      return;
    }
    ucred cred{};
    socklen_t len = sizeof(cred);
    if (::getsockopt(fd, SOL_SOCKET, SO_PEERCRED, &cred, &len) != 0 || !admit(fd, cred)) {
      ::close(fd);  // our end of a Unix socket: its close never blocks
      continue;
    }
    auto f = std::make_unique<Family>();
    f->id = next_family++;
    f->conn_fd = fd;
    f->pid = cred.pid;
    f->uid = cred.uid;
    f->accepted_at = now;
    epoll_event ev{};
    ev.events = EPOLLIN | EPOLLRDHUP;
    ev.data.u64 = kTagConn | f->id;
    epoll_ctl(epfd, EPOLL_CTL_ADD, fd, &ev);
    fams.push_back(std::move(f));
  }
}

/// The pending caps: a connection that has not handshaken holds an engine descriptor, so their
/// number is bounded overall and per uid (root only overall); past a cap it is closed unanswered,
/// as a full listen backlog refuses a connect.
bool HostService::Impl::admit(int /*fd*/, const ucred& cred) {
  std::uint32_t pending = 0, mine = 0;
  for (const auto& g : fams) {
    if (g->active || g->dead) continue;
    ++pending;
    mine += g->uid == cred.uid ? 1 : 0;
  }
  if (pending < cfg.max_pending_attaches && (cred.uid == 0 || mine < cfg.max_pending_per_uid)) return true;
  ++stats.attach_shed;
  return false;
}

/// EMFILE/ENFILE: the reserve descriptor makes room to accept one connection and close it.
bool HostService::Impl::shed_one() {
  if (reserve.fd < 0) return false;
  close_fd(reserve.fd);
  const int fd = ::accept4(listen_fd, nullptr, nullptr, SOCK_CLOEXEC | SOCK_NONBLOCK);
  if (fd >= 0) {
    ::close(fd);
    ++stats.attach_shed;
  }
  reserve.fd = ::open("/dev/null", O_RDONLY | O_CLOEXEC);
  return fd >= 0;
}

/// Connections that did not send their AttachRequest within the handshake timeout are closed;
/// the listener comes back once a pause for lack of descriptors is over.
void HostService::Impl::expire_handshakes() {
  for (auto& g : fams) {
    if (!g->active && !g->dead && now - g->accepted_at >= cfg.handshake_timeout) {
      g->dead = true;
      ++stats.attach_shed;
    }
  }
  if (listener_paused && now >= listener_resume) {
    listener_paused = false;
    epoll_event ev{};
    ev.events = EPOLLIN;
    ev.data.u64 = kTagListener;
    epoll_ctl(epfd, EPOLL_CTL_ADD, listen_fd, &ev);
  }
}

/// Families of `uid` holding a region (attached, or closing their connections).
std::uint32_t HostService::Impl::families_of(uid_t uid) const {
  std::uint32_t n = 0;
  for (const auto& g : fams) n += g->active && g->uid == uid ? 1 : 0;
  return n;
}

/// Answers an attach request with `status` and the reason already in `rep.why`; the family goes.
void HostService::Impl::refuse(Family& f, c::AttachReply& rep, c::AttachStatus status) {
  rep.status = status;
  log("refused pid %d: %s", static_cast<int>(f.pid), rep.why);
  [[maybe_unused]] ssize_t w = ::send(f.conn_fd, &rep, sizeof(rep), MSG_NOSIGNAL | MSG_DONTWAIT);
  ++stats.refused;
  f.dead = true;
}

/// The first message on a new connection: version check, region, reply with the fds.
void HostService::Impl::handshake(Family& f) {
  c::AttachRequest req;
  const ssize_t r = ::recv(f.conn_fd, &req, sizeof(req), MSG_DONTWAIT);
  if (r < 0 && errno == EAGAIN) return;
  // Magic and version are all a host of another version is sure to share with us (contract.hh);
  // a request of our version must be whole.
  constexpr auto kPrefix = static_cast<ssize_t>(offsetof(c::AttachRequest, pid));
  if (r < kPrefix || req.magic != c::kAttachMagic ||
      (req.abi_version == c::kAbiVersion && r != static_cast<ssize_t>(sizeof(req)))) {
    f.dead = true;
    return;
  }
  c::AttachReply rep;
  // Refusals are answered after the request was read: closing a Unix socket with unread data
  // would reset the connection and the host would never see why.
  if (!cfg.allow_any_uid && f.uid != ::geteuid() && f.uid != 0) {
    std::snprintf(rep.why, sizeof(rep.why), "uid %u may not use this engine (it runs as uid %u)",
                  static_cast<unsigned>(f.uid), static_cast<unsigned>(::geteuid()));
    refuse(f, rep, c::AttachStatus::refused);
    return;
  }
  if (const std::uint32_t n = families_of(f.uid); f.uid != 0 && n >= cfg.max_families_per_uid) {
    std::snprintf(rep.why, sizeof(rep.why), "uid %u already has %u families attached (the engine's limit per user)",
                  static_cast<unsigned>(f.uid), n);
    refuse(f, rep, c::AttachStatus::no_resources);
    return;
  }
  if (req.abi_version != c::kAbiVersion) {
    std::snprintf(rep.why, sizeof(rep.why), "host speaks channel ABI version %u, engine speaks %u",
                  req.abi_version, c::kAbiVersion);
    refuse(f, rep, c::AttachStatus::version_mismatch);
    return;
  }
  // Only what both ends know: never a bit the host did not ask for.
  rep.features = req.features & c::kFeaturesKnown;
  int memfd = -1;
  if (!create_region(f, rep.features, memfd)) {
    std::snprintf(rep.why, sizeof(rep.why), "cannot create the shared region: %s", std::strerror(errno));
    refuse(f, rep, c::AttachStatus::no_resources);
    close_fd(memfd);
    return;
  }
  if (!send_region(f, rep, memfd)) {
    f.dead = true;
    return;
  }
  // Edge-triggered: the doorbell is the host's to write (and to make blocking), so the engine's
  // drain (poll_control) may fail or find nothing without the loop spinning on it.
  epoll_event ev{};
  ev.events = EPOLLIN | EPOLLET;
  ev.data.u64 = kTagDoorbell | f.id;
  epoll_ctl(epfd, EPOLL_CTL_ADD, f.doorbell_fd, &ev);
  f.active = true;
  ++stats.attached;
  // The attaching process is the family's first: entry kProcFirst, watched from now on. A host
  // whose own pid differs from SO_PEERCRED's lives in another pid namespace: the pids it would
  // register mean nothing here, so its processes are not watched (their references go with the
  // family, as at exit of the last one).
  f.watch_pids = req.pid == static_cast<std::uint32_t>(f.pid);
  f.dma->write_u32(c::proc_off(f.geo, c::kProcFirst) + offsetof(c::ProcEntry, pid), static_cast<std::uint32_t>(f.pid));
  if (f.watch_pids) {
    watch_proc(f, c::kProcFirst, f.pid);
  } else {
    log("pid %d attached from another pid namespace (it says pid %u): its processes are not watched",
        static_cast<int>(f.pid), req.pid);
  }
  log("attached pid %d uid %u: %u sockets, %u-byte stream rings, region %llu bytes", static_cast<int>(f.pid),
      static_cast<unsigned>(f.uid), f.geo.max_sockets, f.geo.stream_ring_bytes,
      static_cast<unsigned long long>(f.bytes));
}

/// The accepting reply with SCM_RIGHTS [region memfd, doorbell eventfd]; closes our memfd.
bool HostService::Impl::send_region(Family& f, c::AttachReply& rep, int& memfd) {
  rep.region_bytes = f.bytes;
  const int fds[2] = {memfd, f.doorbell_fd};
  const ssize_t w = channel::send_with_fds(f.conn_fd, &rep, sizeof(rep), fds, 0);
  close_fd(memfd);  // the mapping stays; the host holds its own reference now
  return w == static_cast<ssize_t>(sizeof(rep));
}

bool HostService::Impl::create_region(Family& f, std::uint64_t features, int& memfd) {
  c::RegionHeader h;
  if (!c::layout(cfg.geometry, h)) {
    errno = EINVAL;
    return false;
  }
  h.features = features;
  h.n_addrs = static_cast<std::uint32_t>(std::min<std::size_t>(cfg.addrs.size(), 8));
  for (std::uint32_t i = 0; i < h.n_addrs; ++i) {
    h.addrs[i].addr = cfg.addrs[i].addr.v;
    h.addrs[i].prefix_len = cfg.addrs[i].prefix_len;
  }
  memfd = ::memfd_create("pno-region", MFD_CLOEXEC | MFD_ALLOW_SEALING);
  if (memfd < 0) return false;
  ::fchmod(memfd, 0600);
  if (::ftruncate(memfd, static_cast<off_t>(h.region_bytes)) != 0) return false;
  // The host gets this file read-write: unsealed, its ftruncate() would turn the engine's next
  // access into SIGBUS. The size is fixed for good (F_SEAL_SEAL: no seal added later, such as
  // F_SEAL_FUTURE_WRITE); writes stay allowed (memfd_create(2), shmem_file_setattr()).
  if (::fcntl(memfd, F_ADD_SEALS, F_SEAL_SHRINK | F_SEAL_GROW | F_SEAL_SEAL) != 0) return false;
  void* map = mmap(nullptr, h.region_bytes, PROT_READ | PROT_WRITE, MAP_SHARED, memfd, 0);
  if (map == MAP_FAILED) return false;
  f.doorbell_fd = ::eventfd(0, EFD_NONBLOCK | EFD_CLOEXEC);
  if (f.doorbell_fd < 0) {
    munmap(map, h.region_bytes);
    return false;
  }
  f.map = static_cast<std::byte*>(map);
  f.bytes = h.region_bytes;
  f.geo = h;
  f.dma = std::make_unique<channel::MemcpyDma>(f.map, f.bytes);
  f.dma->set_model(&pcie);
  f.dma->write(0, std::as_bytes(std::span(&h, 1)));
  f.socks.assign(h.max_sockets, EngSock{});
  f.free_slots.clear();
  for (std::uint32_t i = h.max_sockets; i > 0; --i) f.free_slots.push_back(i - 1);
  f.prepared.assign(h.max_sockets, false);
  f.waiter_fds.assign(h.max_waiters, -1);
  f.procs.assign(h.max_procs, ProcWatch{});
  f.dma->write_u32(c::proc_off(h, c::kProcFirst), static_cast<std::uint32_t>(c::ProcState::live));
  f.dma->write_u32(c::proc_off(h, c::proc_shared(h)), static_cast<std::uint32_t>(c::ProcState::shared));
  f.woken.assign(h.max_waiters, 0);
  f.cmd = channel::DmaRingConsumer<c::Command>(f.dma.get(), h.cmd_off, h.cmd_entries);
  f.cpl = channel::DmaRingProducer<c::Completion>(f.dma.get(), h.cpl_off, h.cpl_entries);
  f.kicks = channel::DmaRingConsumer<std::uint32_t>(f.dma.get(), h.kick_off, h.kick_entries);
  f.changed = channel::DmaRingProducer<std::uint32_t>(f.dma.get(), h.changed_off, h.changed_entries);
  f.backlog.reserve(h.cmd_entries);
  f.dirty.reserve(h.max_sockets);
  return true;
}

/// A message on an attached family's connection: waiter registration, or the end of it.
void HostService::Impl::control(Family& f) {
  if (!f.active) {
    handshake(f);
    return;
  }
  // At most kControlBudget messages per poll (the connection is level-triggered: the rest next time).
  for (std::uint32_t n = 0; n < kControlBudget; ++n) {
    c::WaiterRegister req;
    // Room for every descriptor recv_with_fds takes: the ones beyond the first are the host's
    // mistake and are closed off the loop like any descriptor the engine did not verify.
    int fds[channel::kMaxPassedFds + 2];
    const ssize_t r = channel::recv_with_fds(f.conn_fd, &req, sizeof(req), fds, MSG_DONTWAIT);
    if (r < 0 && (errno == EAGAIN || errno == EINTR)) return;
    for (std::size_t k = 1; k < std::size(fds); ++k) close_off_loop(fds[k]);
    int fd = fds[0];
    if (r <= 0) {  // hang-up: every process of the family is gone
      close_off_loop(fd);
      f.dead = true;
      return;
    }
    waiter_message(f, req, r, fd);
  }
}

/// WaiterRegister / unregister (`len` bytes, `fd` the first descriptor it carried or -1): the
/// descriptor is kept or closed, and the request answered.
void HostService::Impl::waiter_message(Family& f, const c::WaiterRegister& req, ssize_t len, int fd) {
  // Only a non-blocking eventfd becomes a waiter: its close() never blocks (eventfd_release()),
  // and wake() refuses to write it once the host made it blocking. Anything else the host sent is
  // closed off the loop, since its close() may block.
  c::WaiterReply rep;
  if (len != static_cast<ssize_t>(sizeof(req)) || req.magic != c::kAttachMagic || req.index >= f.geo.max_waiters) {
    rep.err = EINVAL;
    close_off_loop(fd);
  } else if (req.op == c::CtlOp::register_waiter) {
    if (fd < 0) {
      rep.err = EBADF;
    } else if (!is_nonblocking_eventfd(fd)) {
      rep.err = EINVAL;
      close_off_loop(fd);
    } else {
      if (f.waiter_fds[req.index] < 0) f.registered.push_back(req.index);
      close_fd(f.waiter_fds[req.index]);
      f.waiter_fds[req.index] = fd;
      f.woken[req.index] = 0;
    }
  } else if (req.op == c::CtlOp::unregister_waiter) {
    close_off_loop(fd);
    close_fd(f.waiter_fds[req.index]);
    std::erase(f.registered, req.index);
  } else {
    rep.err = EINVAL;
    close_off_loop(fd);
  }
  [[maybe_unused]] ssize_t w = ::send(f.conn_fd, &rep, sizeof(rep), MSG_NOSIGNAL | MSG_DONTWAIT);
}

void HostService::Impl::poll_control() {
  expire_handshakes();
  epoll_event evs[32];
  for (;;) {
    const int n = epoll_wait(epfd, evs, 32, 0);
    if (n <= 0) break;
    for (int k = 0; k < n; ++k) {
      const std::uint64_t tag = evs[k].data.u64 & kTagMask;
      const auto id = static_cast<std::uint32_t>(evs[k].data.u64);
      if (tag == kTagListener) {
        accept_attaches();
      } else if (tag == kTagConn) {
        if (Family* f = family(id); f != nullptr) {
          control(*f);
          if ((evs[k].events & (EPOLLHUP | EPOLLERR)) != 0 && (evs[k].events & EPOLLIN) == 0) f->dead = true;
        }
      } else if (tag == kTagProc) {
        const auto e = static_cast<std::uint32_t>(evs[k].data.u64 >> 40);
        if (Family* f = family(id); f != nullptr && !f->dying && e < f->procs.size() && f->procs[e].pidfd >= 0) {
          proc_died(*f, e);
        }
      } else if (tag == kTagDoorbell) {
        if (Family* f = family(id); f != nullptr && f->doorbell_fd >= 0) {
          // The host shares this description and may have cleared O_NONBLOCK, then drained the
          // counter after epoll saw it: a plain read() would sleep. RWF_NOWAIT is per call
          // (eventfd_read_iter(): EAGAIN at zero); kernels without it answer EOPNOTSUPP, and
          // the edge-triggered registration keeps an undrained doorbell from spinning the loop.
          std::uint64_t v;
          iovec io{&v, sizeof(v)};
          [[maybe_unused]] ssize_t r = ::preadv2(f->doorbell_fd, &io, 1, -1, RWF_NOWAIT);
          ++stats.doorbells;
        }
      }
    }
    if (n < 32) break;
  }
  reap();
}

}  // namespace pno::engine
