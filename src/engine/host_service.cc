#include "engine/host_service.hh"

#include <fcntl.h>
#include <sys/epoll.h>
#include <sys/eventfd.h>
#include <sys/mman.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <sys/un.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cstdio>
#include <cstring>
#include <unordered_map>

#include "channel/spsc.hh"
#include "stack/tcp/tcp_layer.hh"
#include "stack/tcp/tcp_state.hh"

namespace pno::engine {

namespace c = channel::contract;
using channel::DmaRingConsumer;
using channel::DmaRingProducer;

namespace {

constexpr std::size_t kStaging = 64 * 1024;
constexpr Duration kControlInterval = std::chrono::microseconds(200);
constexpr std::uint64_t kTagListener = 1ULL << 32;
constexpr std::uint64_t kTagConn = 2ULL << 32;
constexpr std::uint64_t kTagDoorbell = 3ULL << 32;
constexpr std::uint64_t kTagProc = 4ULL << 32;  ///< | entry << 40 | family id: a watched pid's pidfd
constexpr std::uint64_t kTagMask = 0xff00000000ULL;
constexpr int kErrCorrupt = EIO;
/// How long the connections of a family that died may take to hand their send rings to TCP.
constexpr Duration kDyingLimit = std::chrono::seconds(30);
constexpr std::uint16_t kDeferred = 0xfffe;  ///< execute(): the completion comes later (blocking close)

void close_fd(int& fd) {
  if (fd >= 0) ::close(fd);
  fd = -1;
}

/// The TCP readiness bits the host reads from a slot (HostChannel::readiness): hang-ups and errors,
/// and writability while the send ring is not in use. TCP's own IN bit and, on a sendable socket,
/// its OUT bit move with nearly every segment; publishing them would bump event_seq and wake the
/// host for changes it cannot see (and re-arm edge-triggered epoll members for nothing).
std::uint32_t host_visible(std::uint32_t tcp_ready, std::uint32_t flags) {
  std::uint32_t v = tcp_ready & (kHangup | kReadHangup | kError);
  if ((flags & c::kFlagSendable) == 0) v |= tcp_ready & kWritable;
  return v;
}

/// The engine's own view of one socket of a family (trusted state; the slot is its publication).
struct EngSock {
  SocketId id = kInvalidSocket;
  std::uint16_t gen = 0;
  c::SlotState state = c::SlotState::free;
  bool dirty = false;
  bool changed = false;
  bool closing = false;          ///< the host closed it: drain the send ring, then close
  bool shut_wr_pending = false;  ///< shutdown(write) after the send ring drained
  bool shut_wr_done = false;
  bool rx_eof = false;
  bool linger_wait = false;      ///< SO_LINGER > 0: the close() completion waits (tag below)
  bool linger_fin = false;       ///< our FIN is queued; waiting for everything to be acked
  bool death_closed = false;     ///< closed because its last holder died (until the slot is reused)
  std::uint16_t linger_tag = 0;
  Instant linger_until{};
  std::uint32_t snd_head = 0, rcv_tail = 0, acc_tail = 0;
  std::uint32_t nospace_seen = 0;  ///< the host's last snd_nospace answered with an event
  std::uint32_t flags = 0, tcp_ready = 0, event_seq = 0;
  std::int32_t err = 0;
};

/// A process of a family the engine watches (its process table entry is live).
struct ProcWatch {
  int pidfd = -1;
  pid_t pid = 0;
};

struct Family {
  std::uint32_t id = 0;
  int conn_fd = -1, doorbell_fd = -1;
  bool active = false;  ///< region handed over (false: attach handshake pending)
  pid_t pid = 0;
  uid_t uid = 0;
  std::byte* map = nullptr;
  std::uint64_t bytes = 0;
  std::unique_ptr<channel::MemcpyDma> dma;
  c::RegionHeader geo{};
  std::vector<EngSock> socks;
  std::vector<std::uint32_t> free_slots;
  std::vector<bool> prepared;  ///< slot rings already made resident (DmaChannel::prepare)
  std::vector<std::uint32_t> dirty;
  std::vector<int> waiter_fds;
  std::vector<std::uint32_t> woken;
  std::vector<std::uint32_t> registered;
  std::vector<ProcWatch> procs;  ///< per process table entry
  bool watch_pids = false;       ///< the host's pids are ours (same pid namespace): watch them
  DmaRingConsumer<c::Command> cmd;
  DmaRingProducer<c::Completion> cpl;
  DmaRingConsumer<std::uint32_t> kicks;
  DmaRingProducer<std::uint32_t> changed;
  std::vector<c::Completion> backlog;  ///< completions that did not fit the ring yet
  std::uint32_t changed_overflow = 0;
  bool progress = false;
  bool dead = false;    ///< hung up or corrupt
  bool dying = false;   ///< its sockets are being closed (see start_dying)
  Instant dying_until{};

  ~Family() {
    for (int& fd : waiter_fds) close_fd(fd);
    for (ProcWatch& w : procs) close_fd(w.pidfd);
    close_fd(conn_fd);
    close_fd(doorbell_fd);
    if (map != nullptr) munmap(map, bytes);
  }
};

struct SockRef {
  std::uint32_t family;
  std::uint32_t index;
};

}  // namespace

struct HostService::Impl {
  HostServiceConfig cfg;
  HostServiceStats stats;
  channel::DmaStats dma_past;
  tcp::TcpLayer* tcp = nullptr;
  int listen_fd = -1;
  int epfd = -1;
  std::uint32_t next_family = 1;
  std::vector<std::unique_ptr<Family>> fams;
  std::unordered_map<SocketId, SockRef> by_tcp;
  std::vector<std::byte> staging = std::vector<std::byte>(kStaging);
  std::vector<std::uint32_t> work;
  std::vector<std::pair<std::uint32_t, std::uint32_t>> lingering;  ///< (family, slot) in a blocking close
  std::vector<std::uint32_t> proc_row;        ///< proc_died(): the dead entry's counts
  std::vector<c::ProcEntry> proc_states;      ///< proc_died(): the process table after the fence
  Instant next_control{};
  Instant now{};
  bool busy = false;
  bool idle = false;          ///< the loop sleeps between iterations (see woke())
  bool control_due = false;   ///< the last sleep ended on wait_fd() readiness
  channel::PcieModel pcie;    ///< one link for all families; settled once per on_tick / prepare_sleep

  explicit Impl(HostServiceConfig c) : cfg(std::move(c)), pcie(cfg.pcie, cfg.pcie_clock) {}
  ~Impl() {
    fams.clear();
    close_fd(epfd);
    if (listen_fd >= 0) {
      close_fd(listen_fd);
      ::unlink(cfg.socket_path.c_str());
    }
  }

  void log(const char* fmt, auto... args) {
    if (cfg.quiet) return;
    std::fprintf(stderr, "pno-engine: host: ");
    std::fprintf(stderr, fmt, args...);
    std::fprintf(stderr, "\n");
  }

  Family* family(std::uint32_t id) {
    for (auto& f : fams) {
      if (f->id == id) return f.get();
    }
    return nullptr;
  }

  // ------------------------------------------------------------------------------------ attach

  void accept_attaches() {
    for (;;) {
      const int fd = ::accept4(listen_fd, nullptr, nullptr, SOCK_CLOEXEC | SOCK_NONBLOCK);
      if (fd < 0) return;
      ucred cred{};
      socklen_t len = sizeof(cred);
      if (::getsockopt(fd, SOL_SOCKET, SO_PEERCRED, &cred, &len) != 0) {
        ::close(fd);
        continue;
      }
      auto f = std::make_unique<Family>();
      f->id = next_family++;
      f->conn_fd = fd;
      f->pid = cred.pid;
      f->uid = cred.uid;
      epoll_event ev{};
      ev.events = EPOLLIN | EPOLLRDHUP;
      ev.data.u64 = kTagConn | f->id;
      epoll_ctl(epfd, EPOLL_CTL_ADD, fd, &ev);
      fams.push_back(std::move(f));
    }
  }

  /// The first message on a new connection: version check, region, reply with the fds.
  void handshake(Family& f) {
    c::AttachRequest req;
    const ssize_t r = ::recv(f.conn_fd, &req, sizeof(req), MSG_DONTWAIT);
    if (r < 0 && errno == EAGAIN) return;
    if (r != static_cast<ssize_t>(sizeof(req)) || req.magic != c::kAttachMagic) {
      f.dead = true;
      return;
    }
    c::AttachReply rep;
    // Refusals are answered after the request was read: closing a Unix socket with unread data
    // would reset the connection and the host would never see why.
    if (!cfg.allow_any_uid && f.uid != ::geteuid() && f.uid != 0) {
      rep.status = c::AttachStatus::refused;
      std::snprintf(rep.why, sizeof(rep.why), "uid %u may not use this engine (it runs as uid %u)",
                    static_cast<unsigned>(f.uid), static_cast<unsigned>(::geteuid()));
      log("refused pid %d: %s", static_cast<int>(f.pid), rep.why);
      [[maybe_unused]] ssize_t w = ::send(f.conn_fd, &rep, sizeof(rep), MSG_NOSIGNAL);
      ++stats.refused;
      f.dead = true;
      return;
    }
    if (req.abi_version != c::kAbiVersion) {
      rep.status = c::AttachStatus::version_mismatch;
      std::snprintf(rep.why, sizeof(rep.why), "host speaks channel ABI version %u, engine speaks %u",
                    req.abi_version, c::kAbiVersion);
      log("refused pid %d: %s", static_cast<int>(f.pid), rep.why);
      [[maybe_unused]] ssize_t w = ::send(f.conn_fd, &rep, sizeof(rep), MSG_NOSIGNAL);
      ++stats.refused;
      f.dead = true;
      return;
    }
    int memfd = -1;
    if (!create_region(f, memfd)) {
      rep.status = c::AttachStatus::no_resources;
      std::snprintf(rep.why, sizeof(rep.why), "cannot create the shared region: %s", std::strerror(errno));
      log("refused pid %d: %s", static_cast<int>(f.pid), rep.why);
      [[maybe_unused]] ssize_t w = ::send(f.conn_fd, &rep, sizeof(rep), MSG_NOSIGNAL);
      ++stats.refused;
      f.dead = true;
      close_fd(memfd);
      return;
    }
    rep.region_bytes = f.bytes;
    iovec iov{&rep, sizeof(rep)};
    alignas(cmsghdr) char cbuf[CMSG_SPACE(2 * sizeof(int))] = {};
    msghdr m{};
    m.msg_iov = &iov;
    m.msg_iovlen = 1;
    m.msg_control = cbuf;
    m.msg_controllen = sizeof(cbuf);
    cmsghdr* cm = CMSG_FIRSTHDR(&m);
    cm->cmsg_level = SOL_SOCKET;
    cm->cmsg_type = SCM_RIGHTS;
    cm->cmsg_len = CMSG_LEN(2 * sizeof(int));
    const int fds[2] = {memfd, f.doorbell_fd};
    std::memcpy(CMSG_DATA(cm), fds, sizeof(fds));
    const ssize_t w = ::sendmsg(f.conn_fd, &m, MSG_NOSIGNAL);
    close_fd(memfd);  // the mapping stays; the host holds its own reference now
    if (w != static_cast<ssize_t>(sizeof(rep))) {
      f.dead = true;
      return;
    }
    epoll_event ev{};
    ev.events = EPOLLIN;
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

  bool create_region(Family& f, int& memfd) {
    c::RegionHeader h;
    if (!c::layout(cfg.geometry, h)) {
      errno = EINVAL;
      return false;
    }
    h.n_addrs = static_cast<std::uint32_t>(std::min<std::size_t>(cfg.addrs.size(), 8));
    for (std::uint32_t i = 0; i < h.n_addrs; ++i) {
      h.addrs[i].addr = cfg.addrs[i].addr.v;
      h.addrs[i].prefix_len = cfg.addrs[i].prefix_len;
    }
    memfd = ::memfd_create("pno-region", MFD_CLOEXEC);
    if (memfd < 0) return false;
    ::fchmod(memfd, 0600);
    if (::ftruncate(memfd, static_cast<off_t>(h.region_bytes)) != 0) return false;
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
    f.cmd = DmaRingConsumer<c::Command>(f.dma.get(), h.cmd_off, h.cmd_entries);
    f.cpl = DmaRingProducer<c::Completion>(f.dma.get(), h.cpl_off, h.cpl_entries);
    f.kicks = DmaRingConsumer<std::uint32_t>(f.dma.get(), h.kick_off, h.kick_entries);
    f.changed = DmaRingProducer<std::uint32_t>(f.dma.get(), h.changed_off, h.changed_entries);
    f.backlog.reserve(h.cmd_entries);
    f.dirty.reserve(h.max_sockets);
    return true;
  }

  /// A message on an attached family's connection: waiter registration, or the end of it.
  void control(Family& f) {
    if (!f.active) {
      handshake(f);
      return;
    }
    for (;;) {
      c::WaiterRegister req;
      iovec iov{&req, sizeof(req)};
      alignas(cmsghdr) char cbuf[CMSG_SPACE(4 * sizeof(int))] = {};
      msghdr m{};
      m.msg_iov = &iov;
      m.msg_iovlen = 1;
      m.msg_control = cbuf;
      m.msg_controllen = sizeof(cbuf);
      const ssize_t r = ::recvmsg(f.conn_fd, &m, MSG_DONTWAIT | MSG_CMSG_CLOEXEC);
      if (r < 0 && (errno == EAGAIN || errno == EINTR)) return;
      int fd = -1;
      for (cmsghdr* cm = CMSG_FIRSTHDR(&m); cm != nullptr; cm = CMSG_NXTHDR(&m, cm)) {
        if (cm->cmsg_level != SOL_SOCKET || cm->cmsg_type != SCM_RIGHTS) continue;
        const std::size_t n = (cm->cmsg_len - CMSG_LEN(0)) / sizeof(int);
        for (std::size_t k = 0; k < n; ++k) {
          int x;
          std::memcpy(&x, CMSG_DATA(cm) + k * sizeof(int), sizeof(int));
          if (fd < 0) {
            fd = x;
          } else {
            ::close(x);
          }
        }
      }
      if (r <= 0) {  // hang-up: every process of the family is gone
        close_fd(fd);
        f.dead = true;
        return;
      }
      c::WaiterReply rep;
      if (r != static_cast<ssize_t>(sizeof(req)) || req.magic != c::kAttachMagic || req.index >= f.geo.max_waiters) {
        rep.err = EINVAL;
        close_fd(fd);
      } else if (req.op == c::CtlOp::register_waiter) {
        if (fd < 0) {
          rep.err = EBADF;
        } else {
          if (f.waiter_fds[req.index] < 0) f.registered.push_back(req.index);
          close_fd(f.waiter_fds[req.index]);
          f.waiter_fds[req.index] = fd;
          f.woken[req.index] = 0;
        }
      } else if (req.op == c::CtlOp::unregister_waiter) {
        close_fd(fd);
        close_fd(f.waiter_fds[req.index]);
        std::erase(f.registered, req.index);
      } else {
        rep.err = EINVAL;
        close_fd(fd);
      }
      [[maybe_unused]] ssize_t w = ::send(f.conn_fd, &rep, sizeof(rep), MSG_NOSIGNAL | MSG_DONTWAIT);
    }
  }

  void poll_control() {
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
          if (Family* f = family(id); f != nullptr) {
            std::uint64_t v;
            [[maybe_unused]] ssize_t r = ::read(f->doorbell_fd, &v, sizeof(v));
            ++stats.doorbells;
          }
        }
      }
      if (n < 32) break;
    }
    reap();
  }

  void reap() {
    for (std::size_t k = 0; k < fams.size();) {
      Family& f = *fams[k];
      if (f.dead && !f.dying) start_dying(f);
      if (f.dying && (!f.active || !has_sockets(f) || now >= f.dying_until)) {
        finish_family(f);
        fams.erase(fams.begin() + static_cast<std::ptrdiff_t>(k));
      } else {
        ++k;
      }
    }
  }

  // ---------------------------------------------------------------------------------- sockets

  static std::uint32_t handle(const EngSock& s, std::uint32_t i) { return c::handle_make(i, s.gen); }

  EngSock* resolve(Family& f, std::uint32_t h, std::uint32_t& i) {
    i = c::handle_index(h);
    if (h == 0 || i >= f.socks.size()) return nullptr;
    EngSock& s = f.socks[i];
    if (s.state == c::SlotState::free || s.closing || s.gen != c::handle_gen(h)) return nullptr;
    return &s;
  }

  /// Takes a slot for TCP socket `id`, writes it fresh into the region.
  bool alloc_slot(Family& f, SocketId id, c::SlotState st, std::uint32_t& out) {
    if (f.free_slots.empty()) return false;
    const std::uint32_t i = f.free_slots.back();
    f.free_slots.pop_back();
    if (!f.prepared[i]) {
      // Once per slot: slots are reused last-freed-first, so few ever get here.
      f.prepared[i] = true;
      f.dma->prepare(c::send_ring_off(f.geo, i), 2 * std::uint64_t{f.geo.stream_ring_bytes});
    }
    EngSock& s = f.socks[i];
    const std::uint16_t gen = static_cast<std::uint16_t>(s.gen + 1 == 0 ? 1 : s.gen + 1);
    s = EngSock{};
    s.id = id;
    s.gen = gen;
    s.state = st;
    if (st == c::SlotState::connected) s.flags = c::kFlagSendable | c::kFlagWasConnected;
    s.tcp_ready = host_visible(tcp->readiness(id), s.flags);
    c::SocketSlot fresh{};
    fresh.gen = gen;
    fresh.state = st;
    fresh.flags = s.flags;
    fresh.tcp_ready = s.tcp_ready;
    f.dma->write(c::slot_off(f.geo, i), std::as_bytes(std::span(&fresh, 1)));
    by_tcp[id] = SockRef{f.id, i};
    out = i;
    return true;
  }

  void free_slot(Family& f, std::uint32_t i) {
    EngSock& s = f.socks[i];
    if (s.id != kInvalidSocket) by_tcp.erase(s.id);
    s.id = kInvalidSocket;
    s.state = c::SlotState::free;
    s.closing = false;
    const std::uint32_t line[2] = {s.gen, static_cast<std::uint32_t>(c::SlotState::free)};
    f.dma->write(c::slot_off(f.geo, i), std::as_bytes(std::span(line)));
    f.free_slots.push_back(i);
  }

  void mark_dirty(Family& f, std::uint32_t i) {
    EngSock& s = f.socks[i];
    if (!s.dirty) {
      s.dirty = true;
      f.dirty.push_back(i);
    }
  }

  void set_error(Family& f, std::uint32_t i, EngSock& s, Errc e) {
    if (e == Errc::ok) return;
    s.err = to_errno(e);
    s.flags |= c::kFlagError;
    s.changed = true;
    f.dma->write_u32(c::slot_off(f.geo, i) + offsetof(c::SocketSlot, err_taken), 0);
  }

  /// A socket whose host-written indices make no sense: only this socket of this family suffers.
  void poison(Family& f, std::uint32_t i, EngSock& s) {
    ++stats.corrupt;
    if (s.id != kInvalidSocket && s.state != c::SlotState::listening) tcp->abort(s.id);
    if (s.state == c::SlotState::listening) tcp->close(s.id);
    by_tcp.erase(s.id);
    s.id = kInvalidSocket;
    s.state = c::SlotState::closed;
    s.flags = (s.flags & ~c::kFlagSendable) | c::kFlagSendClosed | c::kFlagRxEof;
    set_error(f, i, s, static_cast<Errc>(kErrCorrupt));
    if (s.closing) free_slot(f, i);
  }

  void publish(Family& f, std::uint32_t i, EngSock& s) {
    if (!s.changed) return;
    s.changed = false;
    ++s.event_seq;
    struct Line {
      std::uint32_t gen;
      c::SlotState state;
      std::uint32_t tcp_ready, event_seq, flags;
      std::int32_t err;
    } line{s.gen, s.state, s.tcp_ready, s.event_seq, s.flags, s.err};
    static_assert(sizeof(Line) == 24);
    f.dma->write(c::slot_off(f.geo, i), std::as_bytes(std::span(&line, 1)));
    const std::uint32_t h = handle(s, i);
    if (f.changed.push(std::span(&h, 1)) == 0) {
      ++f.changed_overflow;
      f.dma->write_u32(offsetof(c::RegionHeader, changed_overflow), f.changed_overflow);
    }
    f.progress = true;
  }

  /// Moves bytes and state for one socket: send ring -> TCP, TCP -> receive ring, accept queue.
  void pump(Family& f, std::uint32_t i) {
    EngSock& s = f.socks[i];
    s.dirty = false;
    if (s.state == c::SlotState::free || s.id == kInvalidSocket) {
      if (s.closing) free_slot(f, i);
      return;
    }
    busy = true;
    const std::uint64_t so = c::slot_off(f.geo, i);
    c::SlotHostLine hl{};
    if (!f.dma->read(so + offsetof(c::SocketSlot, snd_tail), std::as_writable_bytes(std::span(&hl, 1)))) return;
    const std::uint32_t R = f.geo.stream_ring_bytes;

    if (s.state == c::SlotState::listening) {
      pre_accept(f, i, s, hl);
      publish(f, i, s);
      return;
    }

    // Send ring -> TCP.
    std::uint32_t pending = hl.snd_tail - s.snd_head;
    if (pending > R) {
      poison(f, i, s);
      publish(f, i, s);
      return;
    }
    if (pending > 0 && s.state == c::SlotState::connected && (s.flags & c::kFlagSendClosed) == 0) {
      const std::uint32_t head0 = s.snd_head;
      // The ring's bytes are read (DMA) straight into the TCP send buffer's free space: no
      // staging copy. A span may cross the ring's end: read it in two transfers.
      while (pending > 0) {
        const auto space = tcp->send_space(s.id, pending);
        if (!space) {
          if (space.error() != Errc::again) {
            s.flags = (s.flags & ~c::kFlagSendable) | c::kFlagSendClosed;
            s.changed = true;
          }
          break;
        }
        std::size_t filled = 0;
        bool ok = true;
        for (const MutByteSpan dst : {(*space).first, (*space).second}) {
          for (std::size_t off = 0; ok && off < dst.size();) {
            const std::uint32_t pos = (s.snd_head + static_cast<std::uint32_t>(filled)) & (R - 1);
            const std::size_t chunk = std::min<std::size_t>(dst.size() - off, R - pos);
            ok = f.dma->read(c::send_ring_off(f.geo, i) + pos, dst.subspan(off, chunk));
            if (ok) {
              off += chunk;
              filled += chunk;
            }
          }
        }
        if (filled == 0) break;
        const bool more = hl.more != 0 && filled == pending;
        const auto n = tcp->send_commit(s.id, filled, more);
        if (!n || *n == 0) break;
        s.snd_head += static_cast<std::uint32_t>(*n);
        pending -= static_cast<std::uint32_t>(*n);
        stats.bytes_to_tcp += *n;
        if (!ok) break;
      }
      if (s.snd_head != head0) f.dma->write_u32(so + offsetof(c::SocketSlot, snd_head), s.snd_head);
    }
    // Room in the send ring is news only to a host that found too little of it (snd_nospace moved):
    // it gets one event once the free space reaches its writability mark (a quarter of the ring,
    // HostChannel::readiness), as Linux wakes writers past sk_stream_write_space's mark after
    // SOCK_NOSPACE. A writer blocked on a full ring is then not woken for every few segments TCP
    // takes, and a request-response server gets no event for each reply the engine sent. The
    // request is judged on the ring as it is now, whichever pump moved the head: the host may have
    // decided to wait on an older head than the one this pump started from.
    if (hl.snd_nospace != s.nospace_seen && R - pending >= R / 4) {
      s.nospace_seen = hl.snd_nospace;
      s.changed = true;
    }
    if (s.shut_wr_pending && !s.shut_wr_done && (pending == 0 || (s.flags & c::kFlagSendClosed) != 0)) {
      s.shut_wr_done = true;
      tcp->shutdown(s.id, ShutdownHow::write);
      s.flags = (s.flags & ~c::kFlagSendable) | c::kFlagSendClosed;
      s.changed = true;
    }

    // The host closed it: once the send ring is drained (or cannot drain), close the TCP socket.
    if (s.closing) {
      if (pending == 0 || (s.flags & c::kFlagSendClosed) != 0 || s.state != c::SlotState::connected) {
        const bool unread = s.rcv_tail != hl.rcv_head;
        if (s.linger_wait && !unread && !linger_done(f, i, s)) return;
        if (unread) {
          tcp->abort(s.id);  // Linux: close() with unread data sends RST (RFC 2525 §2.17)
        } else {
          tcp->close(s.id);
        }
        finish_linger(f, s);
        free_slot(f, i);
      }
      return;
    }

    // TCP -> receive ring.
    const std::uint32_t used = s.rcv_tail - hl.rcv_head;
    if (used > R) {
      poison(f, i, s);
      publish(f, i, s);
      return;
    }
    std::uint32_t space = R - used;
    if (!s.rx_eof && (s.state == c::SlotState::connected || s.state == c::SlotState::connecting)) {
      const std::uint32_t tail0 = s.rcv_tail;
      while (space > 0) {
        // Buffered bytes are written (DMA) straight from the TCP receive buffer into the ring:
        // no staging copy. recv() below only runs when nothing is buffered, to learn EOF or error.
        if (const auto [a, b] = tcp->recv_view(s.id, space); !a.empty()) {
          std::size_t moved = 0;
          bool ok = true;
          for (const ByteSpan src : {a, b}) {
            for (std::size_t off = 0; ok && off < src.size();) {
              const std::uint32_t pos = (s.rcv_tail + static_cast<std::uint32_t>(moved)) & (R - 1);
              const std::size_t chunk = std::min<std::size_t>(src.size() - off, R - pos);
              ok = f.dma->write(c::recv_ring_off(f.geo, i) + pos, src.subspan(off, chunk));
              if (ok) {
                off += chunk;
                moved += chunk;
              }
            }
          }
          tcp->recv_consume(s.id, moved);
          s.rcv_tail += static_cast<std::uint32_t>(moved);
          space -= static_cast<std::uint32_t>(moved);
          stats.bytes_to_host += moved;
          if (!ok) break;
          continue;
        }
        const std::uint32_t pos = s.rcv_tail & (R - 1);
        const std::size_t chunk = std::min<std::size_t>({space, R - pos, staging.size()});
        const auto n = tcp->recv(s.id, std::span(staging).first(chunk));
        if (!n) {
          if (n.error() != Errc::again && n.error() != Errc::not_conn) {
            // The connection is gone (RST, timeout): nothing more will arrive. RxEof is published
            // with the error so that once the host has taken the error (SO_ERROR or recv) it reads
            // EOF and sees IN|HUP, as Linux does after tcp_done(); the error alone is cleared by
            // take_error and would leave the socket looking like an idle live connection.
            set_error(f, i, s, n.error());
            s.rx_eof = true;
            s.flags = (s.flags & ~c::kFlagSendable) | c::kFlagSendClosed | c::kFlagRxEof;
          }
          break;
        }
        if (*n == 0) {
          s.rx_eof = true;
          s.flags |= c::kFlagRxEof;
          s.changed = true;
          break;
        }
        if (!f.dma->write(c::recv_ring_off(f.geo, i) + pos, std::span(staging).first(*n))) break;
        s.rcv_tail += static_cast<std::uint32_t>(*n);
        space -= static_cast<std::uint32_t>(*n);
        stats.bytes_to_host += *n;
        // No break on a short read: the next recv() tells EOF (0) from "nothing yet" (again); the
        // TCP layer raises no new event for a FIN that lands behind data already reported.
      }
      if (space == 0 && !s.rx_eof) {
        // The ring is full: a FIN right behind the data shows as readable with nothing readable.
        const auto rb = tcp->readable_bytes(s.id);
        if (rb && *rb == 0 && (tcp->readiness(s.id) & kReadHangup) != 0) {
          if (const auto n = tcp->recv(s.id, std::span(staging).first(1)); n && *n == 0) {
            s.rx_eof = true;
            s.flags |= c::kFlagRxEof;
            s.changed = true;
          }
        }
      }
      if (s.rcv_tail != tail0) {
        f.dma->write_u32(so + offsetof(c::SocketSlot, rcv_tail), s.rcv_tail);
        s.changed = true;
      }
      bool blocked = false;
      if (space == 0 && !s.rx_eof) {
        const auto rb = tcp->readable_bytes(s.id);
        blocked = rb && *rb > 0;
      }
      if (blocked != ((s.flags & c::kFlagRxBlocked) != 0)) {
        s.flags ^= c::kFlagRxBlocked;
        s.changed = true;
      }
    }

    // State.
    const std::uint32_t ready = tcp->readiness(s.id);
    if (s.state == c::SlotState::connecting) {
      if ((ready & kError) != 0) {
        set_error(f, i, s, tcp->take_error(s.id));
        s.state = c::SlotState::closed;
        s.flags |= c::kFlagSendClosed;
      } else if ((ready & kWritable) != 0) {
        s.state = c::SlotState::connected;
        s.flags |= c::kFlagSendable | c::kFlagWasConnected;
        s.changed = true;
        if (s.shut_wr_pending) s.flags &= ~c::kFlagSendable;
      }
    } else if (s.state == c::SlotState::connected) {
      if ((ready & kError) != 0) {
        set_error(f, i, s, tcp->take_error(s.id));
        s.flags = (s.flags & ~c::kFlagSendable) | c::kFlagSendClosed;
      }
      if ((ready & kHangup) != 0 && (s.flags & c::kFlagSendable) != 0) {
        s.flags = (s.flags & ~c::kFlagSendable) | c::kFlagSendClosed;
        s.changed = true;
      }
    }
    if (const std::uint32_t visible = host_visible(ready, s.flags); visible != s.tcp_ready) {
      s.tcp_ready = visible;
      s.changed = true;
    }
    publish(f, i, s);
    if ((s.flags & c::kFlagRxBlocked) != 0) {
      // Dekker with the host's recv(): it stores rcv_head, fences, then reads the flag. If it read
      // the flag before we set it, we see its new rcv_head here and pump again ourselves.
      f.dma->fence();
      std::uint32_t head = hl.rcv_head;
      if (f.dma->read_u32(so + offsetof(c::SocketSlot, rcv_head), head) && head != hl.rcv_head) mark_dirty(f, i);
    }
  }

  /// SO_LINGER with a timeout: close() returns once everything sent is acknowledged (our FIN
  /// included) or the timeout passed, as Linux's blocking close does; the connection then goes on
  /// closing in the background. Polled from on_tick while pending.
  bool linger_done(Family& f, std::uint32_t i, EngSock& s) {
    if (!s.linger_fin) {
      s.linger_fin = true;
      tcp->shutdown(s.id, ShutdownHow::write);
    }
    const auto ti = tcp->info(s.id);
    const bool acked = !ti || fin_acked(*ti);
    if (acked || now >= s.linger_until) return true;
    mark_lingering(f, i);
    return false;
  }
  static bool fin_acked(const TcpInfo& ti) {
    // TcpState values past FIN-WAIT-1 whose FIN was acknowledged: FIN-WAIT-2, TIME-WAIT, CLOSED.
    using tcp::TcpState;
    const auto st = static_cast<TcpState>(ti.state);
    return st == TcpState::fin_wait_2 || st == TcpState::time_wait || st == TcpState::closed;
  }
  void mark_lingering(Family& f, std::uint32_t i) {
    if (std::find(lingering.begin(), lingering.end(), std::pair{f.id, i}) == lingering.end()) {
      lingering.emplace_back(f.id, i);
    }
  }
  void finish_linger(Family& f, EngSock& s) {
    if (!s.linger_wait) return;
    s.linger_wait = false;
    if (s.linger_tag == c::kNoReply) return;
    c::Completion cp;
    cp.tag = s.linger_tag;
    cp.op = c::Op::close;
    if (f.cpl.push(std::span(&cp, 1)) == 0) f.backlog.push_back(cp);
    f.progress = true;
  }

  void pre_accept(Family& f, std::uint32_t i, EngSock& s, const c::SlotHostLine& hl) {
    const std::uint64_t so = c::slot_off(f.geo, i);
    std::uint32_t head = hl.acc_head;
    for (;;) {
      std::uint32_t q = s.acc_tail - head;
      if (q > c::kAcceptQueue) q = c::kAcceptQueue;  // nonsense from the host: treat as full
      bool any = false;
      while (q < c::kAcceptQueue) {
        Endpoint peer;
        const auto r = tcp->accept(s.id, &peer);
        if (!r) break;
        std::uint32_t ni = 0;
        if (!alloc_slot(f, *r, c::SlotState::connected, ni)) {
          tcp->abort(*r);
          continue;
        }
        c::AcceptEntry e{};
        e.sock = handle(f.socks[ni], ni);
        e.addr = peer.addr.v;
        e.port = peer.port;
        f.dma->write(so + offsetof(c::SocketSlot, accq) + (s.acc_tail % c::kAcceptQueue) * sizeof(e),
                     std::as_bytes(std::span(&e, 1)));
        ++s.acc_tail;
        ++q;
        ++stats.accepted;
        any = true;
        mark_dirty(f, ni);
      }
      if (!any) return;
      f.dma->write_u32(so + offsetof(c::SocketSlot, acc_tail), s.acc_tail);
      s.changed = true;
      // Dekker with the host's accept(), which stores acc_head, fences, then re-reads acc_tail and
      // kicks only if the queue was full before its accept. Our acc_head was read before this
      // refill: an accept meanwhile saw the old tail (no kick) and leaves the queue short of full
      // from then on, so no kick would ever come while TCP still holds connections. Re-read it
      // after the tail store: either we see that accept and fill again, or it sees our tail.
      f.dma->fence();
      std::uint32_t now_head = head;
      if (!f.dma->read_u32(so + offsetof(c::SocketSlot, acc_head), now_head) || now_head == head) return;
      head = now_head;
    }
  }

  // -------------------------------------------------------------------------------- commands

  c::Completion execute(Family& f, const c::Command& cmd) {
    ++stats.commands;
    c::Completion cp;
    cp.tag = cmd.tag;
    cp.op = cmd.op;
    auto fail = [&](Errc e) {
      cp.err = to_errno(e);
      return cp;
    };
    if (cmd.op == c::Op::socket) {
      if (f.free_slots.empty()) return fail(Errc::too_many);
      const auto r = tcp->socket();
      if (!r) return fail(r.error());
      std::uint32_t i = 0;
      if (!alloc_slot(f, *r, c::SlotState::open, i)) {
        tcp->close(*r);
        return fail(Errc::too_many);
      }
      cp.value = handle(f.socks[i], i);
      return cp;
    }
    if (cmd.op == c::Op::proc_register) return fail(register_proc(f, cmd.value, cmd.addr));
    std::uint32_t i = 0;
    EngSock* sp = resolve(f, cmd.sock, i);
    if (sp == nullptr) {
      // A live process's last close racing with the death of the other holder: both saw the socket
      // unheld and the engine closed it first. The close is done; not an unknown handle.
      if (cmd.op == c::Op::close && i < f.socks.size() && f.socks[i].death_closed &&
          f.socks[i].gen == c::handle_gen(cmd.sock)) {
        return cp;
      }
      return fail(Errc::badf);
    }
    EngSock& s = *sp;
    switch (cmd.op) {
      case c::Op::bind:
        if (s.id == kInvalidSocket) return fail(Errc::inval);
        return fail(tcp->bind(s.id, Endpoint{Ipv4Addr{cmd.addr}, cmd.port}));
      case c::Op::listen: {
        if (s.id == kInvalidSocket) return fail(Errc::inval);
        const Errc e = tcp->listen(s.id, cmd.value);
        if (e == Errc::ok && s.state != c::SlotState::listening) {
          s.state = c::SlotState::listening;
          s.changed = true;
          publish(f, i, s);  // before the completion: the host sees a listener once listen() returns
          mark_dirty(f, i);
        }
        return fail(e);
      }
      case c::Op::connect: {
        if (s.id == kInvalidSocket) return fail(Errc::inval);
        const Errc e = tcp->connect(s.id, Endpoint{Ipv4Addr{cmd.addr}, cmd.port});
        if ((e == Errc::in_progress || e == Errc::ok) && s.state == c::SlotState::open) {
          s.state = c::SlotState::connecting;
          s.changed = true;
          publish(f, i, s);
          mark_dirty(f, i);
        }
        return fail(e);
      }
      case c::Op::shutdown: {
        if (cmd.how > static_cast<std::uint16_t>(ShutdownHow::both)) return fail(Errc::inval);
        if (s.state != c::SlotState::connected && s.state != c::SlotState::connecting) return fail(Errc::not_conn);
        const auto how = static_cast<ShutdownHow>(cmd.how);
        if (how != ShutdownHow::write) {
          tcp->shutdown(s.id, ShutdownHow::read);
          s.flags |= c::kFlagRxEof;
          s.rx_eof = true;
          s.changed = true;
        }
        if (how != ShutdownHow::read) {
          // Published at once: the host's readiness turns writable now (HostChannel::readiness),
          // and pollers skip sockets whose event_seq has not moved.
          s.shut_wr_pending = true;
          s.changed = true;
        }
        publish(f, i, s);
        mark_dirty(f, i);
        return cp;
      }
      case c::Op::close: {
        if (s.state == c::SlotState::connected && s.id != kInvalidSocket) {
          const auto lg = tcp->getsockopt(s.id, SockOpt::linger);
          if (lg && *lg > 0) {
            s.linger_wait = true;
            s.linger_tag = cmd.tag;
            s.linger_until = now + std::chrono::seconds(*lg);
            close_socket(f, i, s);
            cp.tag = kDeferred;
            return cp;
          }
        }
        close_socket(f, i, s);
        return cp;
      }
      case c::Op::setsockopt:
        if (s.id == kInvalidSocket) return fail(Errc::inval);
        return fail(tcp->setsockopt(s.id, static_cast<SockOpt>(cmd.how), cmd.value));
      case c::Op::getsockopt: {
        if (s.id == kInvalidSocket) return fail(Errc::inval);
        const auto r = tcp->getsockopt(s.id, static_cast<SockOpt>(cmd.how));
        if (!r) return fail(r.error());
        cp.value = *r;
        return cp;
      }
      case c::Op::local_endpoint:
      case c::Op::peer_endpoint: {
        if (s.id == kInvalidSocket) return fail(Errc::inval);
        const auto r = cmd.op == c::Op::local_endpoint ? tcp->local_endpoint(s.id) : tcp->peer_endpoint(s.id);
        if (!r) return fail(r.error());
        cp.value = static_cast<std::int64_t>((std::uint64_t{(*r).addr.v} << 16) | (*r).port);
        return cp;
      }
      case c::Op::info: {
        if (s.id == kInvalidSocket) return fail(Errc::inval);
        const auto r = tcp->info(s.id);
        if (!r) return fail(r.error());
        static_assert(sizeof(TcpInfo) <= sizeof(cp.payload));
        std::memcpy(cp.payload, &*r, sizeof(TcpInfo));
        return cp;
      }
      case c::Op::take_error: {
        if ((s.flags & c::kFlagError) != 0) {
          const auto e = static_cast<Errc>(s.err);
          s.flags &= ~c::kFlagError;
          s.changed = true;
          publish(f, i, s);
          return fail(e);
        }
        return fail(s.id == kInvalidSocket ? Errc::ok : tcp->take_error(s.id));
      }
      default:
        return fail(Errc::inval);
    }
  }

  // ------------------------------------------------------------------------- process deaths

  /// Starts watching `pid` as the process of table entry `e`. A pid already gone counts as a death
  /// now (a child killed right after fork, before its parent registered it).
  Errc watch_proc(Family& f, std::uint32_t e, pid_t pid) {
    const int fd = static_cast<int>(::syscall(SYS_pidfd_open, pid, 0));
    if (fd < 0) {
      const int err = errno;
      if (err == ESRCH) {
        f.procs[e].pid = pid;
        proc_died(f, e);
        return Errc::ok;
      }
      log("cannot watch pid %d: %s (its sockets close with its family)", static_cast<int>(pid), std::strerror(err));
      return static_cast<Errc>(err);
    }
    f.procs[e] = ProcWatch{fd, pid};  // pidfds are close-on-exec
    epoll_event ev{};
    ev.events = EPOLLIN;
    ev.data.u64 = kTagProc | (std::uint64_t{e} << 40) | f.id;
    epoll_ctl(epfd, EPOLL_CTL_ADD, fd, &ev);
    return Errc::ok;
  }

  /// Op::proc_register: the host forked a child that uses entry `e`. Everything is host input: an
  /// index out of range, the shared entry or an entry already watched is refused.
  Errc register_proc(Family& f, std::int64_t e, std::uint32_t pid) {
    if (e < 0 || e >= static_cast<std::int64_t>(c::proc_shared(f.geo)) || pid == 0 || pid > 0x3fffffff) {
      return Errc::inval;
    }
    if (!f.watch_pids) return Errc::op_not_supp;
    const auto idx = static_cast<std::uint32_t>(e);
    if (f.procs[idx].pidfd >= 0) return static_cast<Errc>(EBUSY);
    f.dma->write_u32(c::proc_off(f.geo, idx), static_cast<std::uint32_t>(c::ProcState::live));
    return watch_proc(f, idx, static_cast<pid_t>(pid));
  }

  /// Process table entry `e`'s process died (pidfd readable, or gone before it was watched): drop
  /// its references. Its row is stable now (only its process wrote it). The entry is marked dead,
  /// then (after a full fence: Dekker with the host's close(), see contract.hh) every socket it
  /// held, and the one it was closing, is closed as Op::close would if no other entry counts it.
  void proc_died(Family& f, std::uint32_t e) {
    ++stats.proc_deaths;
    busy = true;
    close_fd(f.procs[e].pidfd);
    const pid_t pid = f.procs[e].pid;
    f.procs[e] = ProcWatch{};
    const std::uint32_t n = f.geo.max_sockets;
    proc_row.assign(n, 0);
    f.dma->read(c::count_off(f.geo, e, 0), std::as_writable_bytes(std::span(proc_row)));
    std::uint32_t pending = 0;
    f.dma->read_u32(c::proc_off(f.geo, e) + offsetof(c::ProcEntry, pending), pending);
    f.dma->write_u32(c::proc_off(f.geo, e), static_cast<std::uint32_t>(c::ProcState::dead));
    f.dma->fence();
    proc_states.assign(f.geo.max_procs, c::ProcEntry{});
    f.dma->read(c::proc_off(f.geo, 0), std::as_writable_bytes(std::span(proc_states)));
    std::uint32_t closed = 0;
    for (std::uint32_t i = 0; i < n; ++i) {
      if (proc_row[i] != 0 && drop_if_unheld(f, e, i)) ++closed;
    }
    // The handle it was closing: its count may already be zero while nobody sent the close.
    if (const std::uint32_t pi = c::handle_index(pending); pending != 0 && pi < n && proc_row[pi] == 0 &&
                                                          f.socks[pi].gen == c::handle_gen(pending)) {
      if (drop_if_unheld(f, e, pi)) ++closed;
    }
    f.dma->write_u32(c::proc_off(f.geo, e), static_cast<std::uint32_t>(c::ProcState::free));
    if (closed != 0) {
      log("pid %d of pid %d's family died: %u of its sockets closed", static_cast<int>(pid), static_cast<int>(f.pid),
          closed);
    }
  }

  /// Closes socket `i` unless an entry other than the dead `e` still counts it (`proc_states` read
  /// after the fence; `claiming` rows are being cleared and count nothing). Unknown states count: a
  /// garbled table keeps sockets open, it never closes one another process holds.
  bool drop_if_unheld(Family& f, std::uint32_t e, std::uint32_t i) {
    EngSock& s = f.socks[i];
    if (s.state == c::SlotState::free || s.closing) return false;
    for (std::uint32_t o = 0; o < proc_states.size(); ++o) {
      if (o == e) continue;
      const auto st = static_cast<c::ProcState>(proc_states[o].state);
      if (st == c::ProcState::free || st == c::ProcState::dead || st == c::ProcState::claiming) continue;
      std::uint32_t cnt = 0;
      if (!f.dma->read_u32(c::count_off(f.geo, o, i), cnt) || cnt != 0) return false;
    }
    s.linger_wait = false;
    s.death_closed = true;
    ++stats.death_closes;
    close_socket(f, i, s);
    return true;
  }

  /// The host's last reference went. Listeners close at once (the port is free again) and reset
  /// the connections still in their accept queue, as Linux does; connections drain their send ring
  /// first (pump() finishes them).
  void close_socket(Family& f, std::uint32_t i, EngSock& s) {
    s.closing = true;
    if (s.state == c::SlotState::listening) {
      std::uint32_t acc_head = s.acc_tail;
      f.dma->read_u32(c::slot_off(f.geo, i) + offsetof(c::SocketSlot, acc_head), acc_head);
      if (s.acc_tail - acc_head > c::kAcceptQueue) acc_head = s.acc_tail;
      for (std::uint32_t k = acc_head; k != s.acc_tail; ++k) {
        c::AcceptEntry e{};
        f.dma->read(c::slot_off(f.geo, i) + offsetof(c::SocketSlot, accq) + (k % c::kAcceptQueue) * sizeof(e),
                    std::as_writable_bytes(std::span(&e, 1)));
        std::uint32_t ci = 0;
        // Only our own queued entries: the engine remembers what it queued by handle and state.
        if (EngSock* cs = resolve(f, e.sock, ci); cs != nullptr && cs->state == c::SlotState::connected) {
          tcp->abort(cs->id);
          free_slot(f, ci);
        }
      }
      if (s.id != kInvalidSocket) tcp->close(s.id);
      free_slot(f, i);
      return;
    }
    if (s.state == c::SlotState::open || s.state == c::SlotState::closed || s.id == kInvalidSocket) {
      if (s.id != kInvalidSocket) tcp->close(s.id);
      free_slot(f, i);
      return;
    }
    mark_dirty(f, i);
  }

  /// Every process of the family is gone: close its sockets as Linux does at exit. Listeners close
  /// at once (port free, un-accepted connections reset); a connection with unread received data is
  /// reset; the others first send what their send ring still holds, then FIN. The family lingers
  /// (region mapped, no commands) until the last of them is closed, at most kDyingLimit.
  void start_dying(Family& f) {
    f.dying = true;
    f.dying_until = now + kDyingLimit;
    if (f.conn_fd >= 0) epoll_ctl(epfd, EPOLL_CTL_DEL, f.conn_fd, nullptr);
    if (f.doorbell_fd >= 0) epoll_ctl(epfd, EPOLL_CTL_DEL, f.doorbell_fd, nullptr);
    close_fd(f.conn_fd);
    close_fd(f.doorbell_fd);
    for (int& fd : f.waiter_fds) close_fd(fd);
    for (ProcWatch& w : f.procs) close_fd(w.pidfd);
    f.registered.clear();
    if (!f.active) return;
    for (std::uint32_t i = 0; i < f.socks.size(); ++i) {
      EngSock& s = f.socks[i];
      if (s.state == c::SlotState::listening && !s.closing) close_socket(f, i, s);
    }
    for (std::uint32_t i = 0; i < f.socks.size(); ++i) {
      EngSock& s = f.socks[i];
      if (s.state == c::SlotState::free) continue;
      s.linger_wait = false;
      s.closing = true;
      if (s.id == kInvalidSocket) {
        free_slot(f, i);
        continue;
      }
      std::uint32_t rcv_head = s.rcv_tail;
      f.dma->read_u32(c::slot_off(f.geo, i) + offsetof(c::SocketSlot, rcv_head), rcv_head);
      if (s.rcv_tail != rcv_head) {
        tcp->abort(s.id);  // unread data: RST, the send ring is discarded (as Linux does)
        free_slot(f, i);
        continue;
      }
      pump(f, i);  // drains what fits and closes when the ring is empty
    }
    log("pid %d's family detached; closing its sockets", static_cast<int>(f.pid));
  }

  [[nodiscard]] static bool has_sockets(const Family& f) {
    return std::any_of(f.socks.begin(), f.socks.end(), [](const EngSock& s) { return s.state != c::SlotState::free; });
  }

  /// The end of a dying family: whatever is still open (send ring never drained) is closed now.
  void finish_family(Family& f) {
    if (f.active) {
      for (std::uint32_t i = 0; i < f.socks.size(); ++i) {
        EngSock& s = f.socks[i];
        if (s.state == c::SlotState::free) continue;
        if (s.id != kInvalidSocket) tcp->close(s.id);
        free_slot(f, i);
      }
      const auto& d = f.dma->stats();
      dma_past.read_ops += d.read_ops;
      dma_past.read_bytes += d.read_bytes;
      dma_past.write_ops += d.write_ops;
      dma_past.write_bytes += d.write_bytes;
      dma_past.word_reads += d.word_reads;
      dma_past.word_writes += d.word_writes;
      dma_past.out_of_bounds += d.out_of_bounds;
      ++stats.families_closed;
    }
  }

  // -------------------------------------------------------------------------------- service

  void flush_backlog(Family& f) {
    while (!f.backlog.empty()) {
      const std::size_t n = f.cpl.push(f.backlog);
      if (n == 0) return;
      f.backlog.erase(f.backlog.begin(), f.backlog.begin() + static_cast<std::ptrdiff_t>(n));
      f.progress = true;
    }
  }

  void serve(Family& f) {
    if (!f.active) return;
    if (f.dying) {
      // No host any more: only the closing connections move (send ring -> TCP, then FIN).
      work.swap(f.dirty);
      f.dirty.clear();
      for (std::uint32_t i : work) pump(f, i);
      work.clear();
      return;
    }
    if (f.dead) return;
    flush_backlog(f);
    // Commands, as many as their completions have room for.
    c::Command batch[32];
    while (f.backlog.empty()) {
      const std::uint32_t room = f.cpl.room();
      if (room == 0) break;
      std::size_t got = 0;
      if (!f.cmd.pop(std::span(batch).first(std::min<std::size_t>(room, 32)), got)) {
        corrupt(f, "command ring index");
        return;
      }
      if (got == 0) break;
      busy = true;
      c::Completion out[32];
      std::size_t nout = 0;
      for (std::size_t k = 0; k < got; ++k) {
        const c::Completion cp = execute(f, batch[k]);
        if (cp.tag != kDeferred && cp.tag != c::kNoReply) out[nout++] = cp;
      }
      const std::size_t pushed = f.cpl.push(std::span(out).first(nout));
      for (std::size_t k = pushed; k < nout; ++k) f.backlog.push_back(out[k]);
      f.progress = true;
    }
    // Kicks: sockets with host-side work.
    std::uint32_t kicks[64];
    for (;;) {
      std::size_t got = 0;
      if (!f.kicks.pop(kicks, got)) {
        corrupt(f, "kick ring index");
        return;
      }
      if (got == 0) break;
      busy = true;
      stats.kicks += got;
      for (std::size_t k = 0; k < got; ++k) {
        const std::uint32_t i = kicks[k];
        if (i >= f.socks.size()) {
          ++stats.bad_index;
          continue;
        }
        const std::uint64_t so = c::slot_off(f.geo, i);
        std::uint32_t req = 0;
        if (f.dma->read_u32(so + offsetof(c::SocketSlot, kick_req), req)) {
          f.dma->write_u32(so + offsetof(c::SocketSlot, kick_done), req);
        }
        if (f.socks[i].state != c::SlotState::free) mark_dirty(f, i);
      }
      if (got < std::size(kicks)) break;
    }
    f.dma->fence();  // kick_done stores before the host lines pump() reads
    // Sockets with work.
    work.swap(f.dirty);
    f.dirty.clear();
    for (std::uint32_t i : work) pump(f, i);
    work.clear();
    if (f.progress) wake(f);
  }

  void corrupt(Family& f, const char* what) {
    ++stats.corrupt;
    log("pid %d's family wrote an impossible %s: detaching it", static_cast<int>(f.pid), what);
    f.dead = true;
  }

  /// Writes the eventfd of every armed waiter not yet woken for its current arming.
  void wake(Family& f) {
    f.progress = false;
    f.dma->fence();  // our publications before the arm words we read (the host arms, then checks)
    std::uint32_t armed_count = 0;
    if (!f.dma->read_u32(offsetof(c::RegionHeader, armed_waiters), armed_count) || armed_count == 0) return;
    for (std::uint32_t idx : f.registered) {
      std::uint32_t armed = 0;
      if (!f.dma->read_u32(f.geo.waiters_off + std::uint64_t{idx} * sizeof(c::WaiterEntry) +
                               offsetof(c::WaiterEntry, armed),
                           armed)) {
        continue;
      }
      if (armed == 0 || armed == f.woken[idx] || f.waiter_fds[idx] < 0) continue;
      f.woken[idx] = armed;
      const std::uint64_t one = 1;
      [[maybe_unused]] ssize_t r = ::write(f.waiter_fds[idx], &one, sizeof(one));
      ++stats.wakeups;
    }
  }
};

// ------------------------------------------------------------------------------------ HostService

HostService::HostService(HostServiceConfig cfg) : impl_(std::make_unique<Impl>(std::move(cfg))) {}
HostService::~HostService() = default;

Errc HostService::start(tcp::TcpLayer& tcp, Instant now) {
  Impl& im = *impl_;
  im.tcp = &tcp;
  im.next_control = now;
  im.epfd = epoll_create1(EPOLL_CLOEXEC);
  if (im.epfd < 0) return static_cast<Errc>(errno);
  if (im.cfg.socket_path.empty()) return Errc::ok;  // tests: attach_for_test only
  sockaddr_un sa{};
  sa.sun_family = AF_UNIX;
  if (im.cfg.socket_path.size() >= sizeof(sa.sun_path)) return Errc::inval;
  std::strcpy(sa.sun_path, im.cfg.socket_path.c_str());
  // The directory (default /run/pno) may not exist yet; one level is created.
  if (const auto slash = im.cfg.socket_path.rfind('/'); slash != std::string::npos && slash > 0) {
    ::mkdir(im.cfg.socket_path.substr(0, slash).c_str(), 0755);
  }
  im.listen_fd = ::socket(AF_UNIX, SOCK_SEQPACKET | SOCK_CLOEXEC | SOCK_NONBLOCK, 0);
  if (im.listen_fd < 0) return static_cast<Errc>(errno);
  ::unlink(sa.sun_path);  // a stale socket of an engine that died
  const mode_t old = ::umask(im.cfg.allow_any_uid ? 0 : 077);
  const int rb = ::bind(im.listen_fd, reinterpret_cast<const sockaddr*>(&sa), sizeof(sa));
  ::umask(old);
  if (rb != 0 || ::listen(im.listen_fd, 128) != 0) {
    const int e = errno;
    im.log("cannot listen on %s: %s", sa.sun_path, std::strerror(e));
    close_fd(im.listen_fd);
    return static_cast<Errc>(e);
  }
  epoll_event ev{};
  ev.events = EPOLLIN;
  ev.data.u64 = kTagListener;
  epoll_ctl(im.epfd, EPOLL_CTL_ADD, im.listen_fd, &ev);
  im.log("listening on %s (ABI version %u)", sa.sun_path, c::kAbiVersion);
  return Errc::ok;
}

bool HostService::on_event(tcp::TcpLayer& /*tcp*/, const SocketEvent& ev, Instant /*now*/) {
  Impl& im = *impl_;
  const auto it = im.by_tcp.find(ev.id);
  if (it == im.by_tcp.end()) return false;
  if (Family* f = im.family(it->second.family); f != nullptr && it->second.index < f->socks.size()) {
    im.mark_dirty(*f, it->second.index);
  }
  return true;
}

void HostService::on_tick(tcp::TcpLayer& /*tcp*/, Instant now) {
  Impl& im = *impl_;
  im.now = now;
  if (im.control_due || (!im.idle && now >= im.next_control)) {
    im.control_due = false;
    im.next_control = now + kControlInterval;
    im.poll_control();
  }
  if (!im.lingering.empty()) {
    auto waiting = std::move(im.lingering);
    im.lingering.clear();
    for (auto [fid, i] : waiting) {
      if (Family* f = im.family(fid); f != nullptr && i < f->socks.size() && f->socks[i].linger_wait) {
        im.mark_dirty(*f, i);
      }
    }
  }
  for (auto& f : im.fams) im.serve(*f);
  im.reap();
  // One iteration's transfers, over all families, are one batch per direction (pcie_model.hh).
  if (im.pcie.enabled()) im.pcie.settle();
  if (im.busy) im.idle = false;
}

void HostService::poll_control() { impl_->poll_control(); }

int HostService::wait_fd() const { return impl_->epfd; }

bool HostService::take_busy() {
  const bool b = impl_->busy;
  impl_->busy = false;
  return b;
}

bool HostService::prepare_sleep() {
  Impl& im = *impl_;
  bool work = false;
  for (auto& f : im.fams) {
    if (!f->active) continue;
    f->dma->write_u32(offsetof(c::RegionHeader, engine_sleeping), 1);
  }
  for (auto& f : im.fams) {
    if (!f->active) continue;
    f->dma->fence();
    if (!f->dirty.empty() || !f->backlog.empty() || f->cmd.pending() || f->kicks.pending()) work = true;
  }
  if (im.pcie.enabled()) im.pcie.settle();  // the re-check's index reads are one round trip
  if (work) {
    woke(false);
    im.idle = false;
  }
  return !work;
}

void HostService::woke(bool fd_ready) {
  Impl& im = *impl_;
  for (auto& f : im.fams) {
    if (f->active) f->dma->write_u32(offsetof(c::RegionHeader, engine_sleeping), 0);
  }
  // While the loop sleeps between iterations, the sleep itself tells whether a socket or doorbell
  // needs looking at: no epoll_wait per idle wake-up.
  im.control_due = fd_ready;
  im.idle = true;
}

const HostServiceStats& HostService::stats() const { return impl_->stats; }

channel::DmaStats HostService::dma_stats() const {
  channel::DmaStats s = impl_->dma_past;
  for (const auto& f : impl_->fams) {
    if (!f->dma) continue;
    const auto& d = f->dma->stats();
    s.read_ops += d.read_ops;
    s.read_bytes += d.read_bytes;
    s.write_ops += d.write_ops;
    s.write_bytes += d.write_bytes;
    s.word_reads += d.word_reads;
    s.word_writes += d.word_writes;
    s.out_of_bounds += d.out_of_bounds;
  }
  return s;
}

const channel::PcieModelStats& HostService::pcie_stats() const { return impl_->pcie.stats(); }

std::size_t HostService::families() const { return impl_->fams.size(); }

std::size_t HostService::sockets() const {
  std::size_t n = 0;
  for (const auto& f : impl_->fams) {
    for (const auto& s : f->socks) n += s.state != c::SlotState::free ? 1 : 0;
  }
  return n;
}

std::vector<pid_t> HostService::family_pids() const {
  std::vector<pid_t> v;
  for (const auto& f : impl_->fams) v.push_back(f->pid);
  return v;
}

int HostService::attach_for_test(std::byte** base, std::uint64_t* bytes) {
  Impl& im = *impl_;
  auto f = std::make_unique<Family>();
  f->id = im.next_family++;
  int memfd = -1;
  if (!im.create_region(*f, memfd)) {
    close_fd(memfd);
    return -1;
  }
  void* map = mmap(nullptr, f->bytes, PROT_READ | PROT_WRITE, MAP_SHARED, memfd, 0);
  close_fd(memfd);
  if (map == MAP_FAILED) return -1;
  *base = static_cast<std::byte*>(map);
  *bytes = f->bytes;
  f->active = true;
  f->pid = ::getpid();
  f->watch_pids = true;
  im.fams.push_back(std::move(f));
  return static_cast<int>(im.fams.size() - 1);
}

void HostService::dump(std::FILE* out) const {
  for (const auto& f : impl_->fams) {
    std::fprintf(out, "family pid %d active %d dirty %zu backlog %zu\n", static_cast<int>(f->pid), f->active ? 1 : 0,
                 f->dirty.size(), f->backlog.size());
    for (std::uint32_t i = 0; i < f->socks.size(); ++i) {
      const EngSock& s = f->socks[i];
      if (s.state == c::SlotState::free) continue;
      c::SlotHostLine hl{};
      f->dma->read(c::slot_off(f->geo, i) + offsetof(c::SocketSlot, snd_tail), std::as_writable_bytes(std::span(&hl, 1)));
      std::uint32_t kd = 0;
      f->dma->read_u32(c::slot_off(f->geo, i) + offsetof(c::SocketSlot, kick_done), kd);
      const auto rb = s.id != kInvalidSocket ? impl_->tcp->readable_bytes(s.id) : Result<std::size_t>(Errc::badf);
      std::fprintf(out,
                   "  slot %u tcp %u state %u flags %#x ready %#x seq %u snd %u/%u rcv %u/%u kick %u/%u "
                   "closing %d dirty %d tcp_readable %zu tcp_ready %#x\n",
                   i, s.id, static_cast<unsigned>(s.state), s.flags, s.tcp_ready, s.event_seq, s.snd_head, hl.snd_tail,
                   hl.rcv_head, s.rcv_tail, hl.kick_req, kd, s.closing ? 1 : 0, s.dirty ? 1 : 0, rb ? *rb : 0,
                   s.id != kInvalidSocket ? impl_->tcp->readiness(s.id) : 0);
    }
  }
}

void HostService::service_for_test(Instant now) { on_tick(*impl_->tcp, now); }

bool HostService::proc_died_for_test(int family, std::uint32_t entry) {
  Impl& im = *impl_;
  if (family < 0 || static_cast<std::size_t>(family) >= im.fams.size()) return false;
  Family& f = *im.fams[static_cast<std::size_t>(family)];
  if (entry >= f.procs.size()) return false;
  im.proc_died(f, entry);
  return true;
}

int HostService::watched_procs() const {
  int n = 0;
  for (const auto& f : impl_->fams) {
    for (const auto& w : f->procs) n += w.pidfd >= 0 ? 1 : 0;
  }
  return n;
}

}  // namespace pno::engine
