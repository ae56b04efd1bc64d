// libpno.so: the interposed socket API. Each function looks its fd up in the fd table (one atomic
// load); kernel fds go straight to libc, offloaded sockets to the engine through HostChannel.
#include <arpa/inet.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <pthread.h>
#include <signal.h>
#include <dlfcn.h>
#include <sys/mman.h>
#include <sys/resource.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <sched.h>
#include <cstdio>
#include <sys/syscall.h>

#include <algorithm>
#include <cstdarg>
#include <cstdlib>
#include <cstring>
#include <span>

#include "shim/internal.hh"
#include "shim/log.hh"

namespace pno::shim {

std::atomic<State*> g_state{nullptr};
thread_local bool t_in_channel __attribute__((tls_model("initial-exec"))) = false;

HostChannel* ensure_attached(State* st);
HostChannel* attached_channel(State* st);
bool may_offload(State* st);

namespace {

// The state lives in static storage and is never destroyed: application threads may still call
// in while static destructors run.
alignas(State) unsigned char g_state_storage[sizeof(State)];

const char* env_or(const char* name, const char* fallback) {
  const char* v = std::getenv(name);
  return (v != nullptr && *v != '\0') ? v : fallback;
}

void release_all_refs();

// Lazy attach. A process attaches to the engine at its first bind/connect/listen that the engine
// may serve (shell helpers and pipelines never do); the descriptor tables exist from the start
// so that sockets and epoll instances made before that point are tracked. `g_attach` is a
// once-guard without a lock: the first caller moves it to `attaching`, others spin-yield until it
// settles (the attach is a handful of Unix-socket round trips); a signal handler interrupting its
// own thread's attach gets "no engine" for that one call instead of spinning forever.
enum AttachPhase : int { kUnattached = 0, kAttaching = 1, kAttached = 2, kNoEngine = 3 };
std::atomic<int> g_attach{kUnattached};
thread_local bool t_attaching __attribute__((tls_model("initial-exec"))) = false;
char g_engine_path[256] = {};
bool g_require = false;
bool g_warned = false;  // the one-line "no engine" warning was printed (in this tree, or by us)

/// The process table entry reserved for the child of the fork this thread is in (prepare handler
/// -> child handler / fork() wrapper). kNoTicket when none.
constexpr std::uint32_t kNoTicket = 0xffffffffu;
thread_local std::uint32_t t_fork_ticket __attribute__((tls_model("initial-exec"))) = kNoTicket;

void on_fork_prepare() {
  t_fork_ticket = kNoTicket;
  State* st = state();
  if (st == nullptr) return;
  st->fork_epoch.fetch_add(1, std::memory_order_relaxed);  // both processes now share every epoll
  // A thread attaching right now would not exist in the child, which would wait for it forever:
  // let it finish first (bounded, it does not wait for us).
  if (!t_attaching) {
    while (g_attach.load(std::memory_order_acquire) == kAttaching) ::sched_yield();
  }
  if (g_attach.load(std::memory_order_acquire) != kAttached) return;
  // The child gets a copy of every descriptor: one reference each, counted in the child's own
  // process table entry before the fork so that neither process can drop the last one while the
  // other still has it, and so that the engine drops exactly the child's if it dies by a signal.
  InChannel guard;
  const std::uint32_t t = st->ch->fork_reserve();
  int hw = st->fds.high_water();
  for (int fd = 0; fd < hw; ++fd) {
    if (SockRef r = offloaded(st, fd)) st->ch->fork_retain(t, r.s);
  }
  t_fork_ticket = t;
}

/// In the parent after fork() returned: the engine learns the child's pid (and watches it) before
/// fork() returns to the application; a failed fork gives the reserved references back.
void fork_done_parent(pid_t child) {
  const std::uint32_t t = t_fork_ticket;
  t_fork_ticket = kNoTicket;
  if (t == kNoTicket) return;
  State* st = state();
  if (st == nullptr || g_attach.load(std::memory_order_acquire) != kAttached) return;
  InChannel guard;
  st->ch->fork_parent(t, child);
}

void on_fork_child() {
  State* st = state();
  if (st == nullptr) return;
  int phase = g_attach.load(std::memory_order_acquire);
  if (phase == kAttaching) {
    // Another thread began to attach after the prepare handler looked: that attach belongs to
    // the parent. The child attaches on its own first use (its copy of a half-made channel is
    // left alone: destroying it could touch the parent's family).
    (void)st->channel.release();
    st->ch = nullptr;
    g_attach.store(kUnattached, std::memory_order_release);
    phase = kUnattached;
  }
  if (phase == kAttached) {
    InChannel guard;
    st->ch->after_fork_child(t_fork_ticket);
  }
  t_fork_ticket = kNoTicket;
  // Other threads of the parent may have held these locks at fork time; they do not exist here.
  for (std::uint32_t i = 1; i <= st->epolls.high_water(); ++i) st->epolls[i].lock.reset();
  for (std::uint32_t i = 1; i <= st->socks.high_water(); ++i) st->socks[i].lock.reset();
}

/// Closes this process's references to every offloaded socket: the kernel does the same for a
/// process's descriptors when it exits or execs, and the engine must see it so that a socket
/// shared with a parent or child closes when the last process lets go.
void release_all_refs() {
  State* st = state();
  if (st == nullptr) return;
  int hw = st->fds.high_water();
  for (int fd = 0; fd < hw; ++fd) {
    FdRef r = st->fds.get(fd);
    if (r.kind != FdKind::socket) continue;
    if (!st->fds.take_if(fd, r)) continue;
    st->ch->close(st->socks[r.index].sock.load());
  }
}

void at_exit_handler() { release_all_refs(); }

// ---------------------------------------------------------------------------------------------
// exec: offloaded sockets without FD_CLOEXEC survive it, as kernel sockets do. Before the real
// exec the channel's three fds lose FD_CLOEXEC and a memfd (number in PNO_EXEC_STATE) describes
// every offloaded fd; the next image's constructor adopts the channel (no new attach: the engine
// sees the same connection, the same family, the same references) and closes the references of
// the fds the kernel closed (FD_CLOEXEC). A failed exec restores the flags: nothing changed.

constexpr const char* kExecStateEnv = "PNO_EXEC_STATE";
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

State* init_state();
void publish_state(State* st);

/// In the new image's constructor: takes the previous image's attachment and offloaded fds.
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
  const channel::EngineInfo& info = ch->engine();
  std::size_t na = std::min<std::size_t>(info.n_addrs, std::size(st->addr_copy));
  for (std::size_t i = 0; i < na; ++i) st->addr_copy[i] = info.addrs[i];
  st->addrs = EngineAddrs{st->addr_copy, na};
  st->ch = ch.get();
  st->channel = std::move(ch);
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
  g_attach.store(kAttached, std::memory_order_release);
  publish_state(st);
  if (log_enabled(LogLevel::info)) {
    log(LogLevel::info, "took the engine attachment over exec: %u sockets kept, %u closed (FD_CLOEXEC)", kept,
        closed);
  }
  return true;
}

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
  int sfd = static_cast<int>(::syscall(SYS_memfd_create, "pno-exec", 0));
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

/// The descriptor tables (mmap'd, no engine contact); nullptr when they cannot be mapped.
State* init_state() {
  auto* st = new (g_state_storage) State();  // placement into static storage, never freed
  bool ok = st->fds.init(kMaxTrackedFds) && st->socks.init(kMaxSockDescs) &&
            st->epolls.init(kMaxEpolls) && st->members.init(kMaxMembers) &&
            st->member_hint.init(kMaxTrackedFds);
  if (!ok) return nullptr;
  rlimit rl{};
  int cap = kMaxTrackedFds;
  if (::getrlimit(RLIMIT_NOFILE, &rl) == 0 && rl.rlim_cur < static_cast<rlim_t>(cap)) {
    cap = static_cast<int>(rl.rlim_cur);
  }
  st->internal_fd_base = cap / 2;
  return st;
}

void publish_state(State* st) {
  ::pthread_atfork(on_fork_prepare, nullptr, on_fork_child);
  std::atexit(at_exit_handler);
  g_state.store(st, std::memory_order_release);
}

[[noreturn]] void require_engine_failed(const char* path, const char* why) {
  log(LogLevel::error, "engine at %s is required (PNO_REQUIRE_ENGINE=1) but not usable: %s", path, why);
  PNO_REAL(_exit)(70);  // EX_SOFTWARE
  __builtin_unreachable();
}

/// Whether something accepts connections on the engine's socket path, without attaching: connect
/// and hang up (the engine drops a connection that closes before its attach request).
bool engine_answers(const char* path, char* why, std::size_t why_len) {
  sockaddr_un sa{};
  sa.sun_family = AF_UNIX;
  if (std::strlen(path) >= sizeof sa.sun_path) {
    std::snprintf(why, why_len, "socket path too long");
    return false;
  }
  std::strcpy(sa.sun_path, path);
  int fd = PNO_REAL(socket)(AF_UNIX, SOCK_SEQPACKET | SOCK_CLOEXEC, 0);
  if (fd < 0) {
    std::snprintf(why, why_len, "socket: %s", std::strerror(errno));
    return false;
  }
  int r = PNO_REAL(connect)(fd, reinterpret_cast<const sockaddr*>(&sa), sizeof sa);
  int e = errno;
  PNO_REAL(close)(fd);
  if (r != 0) std::snprintf(why, why_len, "connect: %s", std::strerror(e));
  return r == 0;
}

/// The attach itself (under the once-guard): channel, engine addresses.
bool do_attach(State* st) {
  char why[256] = {};
  std::unique_ptr<HostChannel> ch;
  {
    InChannel guard;
    ch = HostChannel::attach(g_engine_path, std::span<char>(why, sizeof why - 1));
  }
  if (!ch) {
    if (g_require) require_engine_failed(g_engine_path, why);
    if (!g_warned) {
      g_warned = true;  // forked children inherit it
      log(LogLevel::warn, "engine at %s not available (%s): using the kernel TCP stack", g_engine_path, why);
    }
    return false;
  }
  const channel::EngineInfo& info = ch->engine();
  std::size_t n = std::min<std::size_t>(info.n_addrs, std::size(st->addr_copy));
  for (std::size_t i = 0; i < n; ++i) st->addr_copy[i] = info.addrs[i];
  st->addrs = EngineAddrs{st->addr_copy, n};
  st->ch = ch.get();
  st->channel = std::move(ch);
  if (log_enabled(LogLevel::info)) {
    log(LogLevel::info, "attached to engine at %s (%u addresses)", g_engine_path, static_cast<unsigned>(n));
  }
  return true;
}

__attribute__((constructor)) void pno_shim_init() {
  real::resolve_all();
  set_log_level(parse_log_level(std::getenv("PNO_LOG_LEVEL"), LogLevel::warn));
  const char* path = env_or("PNO_ENGINE_SOCKET", "/run/pno/engine.sock");
  const char* req = std::getenv("PNO_REQUIRE_ENGINE");
  g_require = req != nullptr && std::strcmp(req, "1") == 0;
  g_warned = std::getenv("PNO_ENGINE_WARNED") != nullptr;
  if (const char* off = std::getenv("PNO_DISABLE"); off != nullptr && std::strcmp(off, "1") == 0) {
    log(LogLevel::info, "PNO_DISABLE=1: every socket stays with the kernel");
    return;
  }
  std::snprintf(g_engine_path, sizeof g_engine_path, "%s", path);
  if (const char* xs = std::getenv(kExecStateEnv); xs != nullptr) {
    // This image replaced one that had offloaded sockets without FD_CLOEXEC: take its attachment.
    int sfd = std::atoi(xs);
    ::unsetenv(kExecStateEnv);  // still single-threaded: the program has not started
    if (adopt_after_exec(sfd)) return;
  }
  // No attach here (see g_attach). What a user sees at start stays: with PNO_REQUIRE_ENGINE=1 an
  // engine that does not answer ends the program before it runs; without it, an absent engine
  // socket gives the one warning per process tree and the plain kernel path with no tables.
  char why[256] = {};
  bool present = false;
  if (g_require) {
    present = engine_answers(path, why, sizeof why);
  } else {
    struct stat sb {};
    present = ::stat(path, &sb) == 0 && S_ISSOCK(sb.st_mode);
    if (!present) std::snprintf(why, sizeof why, "no socket at that path");
  }
  if (!present) {
    if (g_require) require_engine_failed(path, why);
    // One warning per program tree: children inherit the mark through the environment.
    if (!g_warned) {
      log(LogLevel::warn, "engine at %s not available (%s): using the kernel TCP stack", path, why);
      ::setenv("PNO_ENGINE_WARNED", "1", 1);
    }
    return;
  }
  State* st = init_state();
  if (st == nullptr) {
    if (g_require) require_engine_failed(path, "cannot map the shim's descriptor tables");
    log(LogLevel::warn, "cannot map the descriptor tables: using the kernel TCP stack");
    return;
  }
  publish_state(st);
}

}  // namespace

/// The channel, attaching first if this process has not tried yet; nullptr when there is no
/// usable engine (then the caller keeps the socket in the kernel).
HostChannel* ensure_attached(State* st) {
  int phase = g_attach.load(std::memory_order_acquire);
  if (phase == kUnattached && !t_attaching) {
    int expected = kUnattached;
    if (g_attach.compare_exchange_strong(expected, kAttaching, std::memory_order_acq_rel)) {
      t_attaching = true;
      bool ok = do_attach(st);
      t_attaching = false;
      g_attach.store(ok ? kAttached : kNoEngine, std::memory_order_release);
    }
    phase = g_attach.load(std::memory_order_acquire);
  }
  if (phase == kAttaching && t_attaching) return nullptr;  // a signal handler inside our attach
  while (phase == kAttaching) {
    ::sched_yield();
    phase = g_attach.load(std::memory_order_acquire);
  }
  if (phase != kAttached || !st->ch->alive()) return nullptr;
  return st->ch;
}

/// The channel if this process is attached (no attach attempt), else nullptr.
HostChannel* attached_channel(State* st) {
  return g_attach.load(std::memory_order_acquire) == kAttached ? st->ch : nullptr;
}

/// False once an attach failed or the engine died: new sockets are not even tracked then.
bool may_offload(State* st) {
  int phase = g_attach.load(std::memory_order_acquire);
  if (phase == kNoEngine) return false;
  return phase != kAttached || st->ch->alive();
}

namespace {

// ---------------------------------------------------------------------------------------------
// Descriptor bookkeeping

void release_desc(State* st, std::uint32_t idx) {
  SockDesc& d = st->socks[idx];
  if (d.refs.fetch_sub(1, std::memory_order_acq_rel) == 1) {
    d.gen.fetch_add(1, std::memory_order_acq_rel);
    d.reset();
    st->socks.free(idx);
  }
}

/// A new AF_INET stream socket: tracked as pending until bind/connect/listen decides.
void track_new(State* st, int fd, bool want_pending) {
  if (!st->fds.in_range(fd)) return;
  FdRef old = st->fds.take(fd);  // a number closed behind our back (rare): forget what it was
  if (old.kind != FdKind::kernel) untrack_fd(st, fd, old);
  if (!want_pending || !may_offload(st)) return;
  std::uint32_t idx = st->socks.alloc();
  if (idx == 0) {
    log(LogLevel::warn, "descriptor table full: socket %d stays with the kernel", fd);
    return;
  }
  SockDesc& d = st->socks[idx];
  d.reset();
  d.refs.store(1);
  st->fds.set(fd, FdKind::pending, idx);
}

/// Makes the placeholder kernel fd for an offloaded socket: an eventfd dup'ed onto `fd` (or onto
/// the lowest free number when fd < 0). Returns the fd or -1 with errno.
int make_placeholder(int fd, bool cloexec) {
  int efd = PNO_REAL(eventfd)(0, EFD_NONBLOCK | (cloexec ? EFD_CLOEXEC : 0));
  if (efd < 0 || fd < 0) return efd;
  int r = PNO_REAL(dup3)(efd, fd, cloexec ? O_CLOEXEC : 0);
  int e = errno;
  PNO_REAL(close)(efd);
  errno = e;
  return r;
}

void warn_unreplayable(const SockDesc& d, int fd) {
  log(LogLevel::warn,
      "socket %d: option (level %d, name %d) set before hand-over is not supported by the engine "
      "and is not applied there",
      fd, d.unreplayable_level, d.unreplayable_name);
}

/// Hands the pending kernel socket `fd` over to the engine and runs `act` on the new engine
/// socket. On failure the socket stays a pending kernel socket and the engine socket is closed.
template <typename Act>
Errc handover(State* st, int fd, FdRef ref, Act&& act) {
  SockDesc& d = st->socks[ref.index];
  Result<HostSocket> rs = [&] {
    InChannel guard;
    return st->ch->socket();
  }();
  if (!rs) return rs.error();
  HostSocket s = *rs;
  {
    SpinGuard lk(d.lock);
    for (std::uint32_t i = 0; i < d.n_opts; ++i) {
      Errc e = st->ch->setsockopt(s, d.opts[i].opt, d.opts[i].value);
      if (e != Errc::ok) {
        log(LogLevel::warn, "socket %d: engine refused option %d=%d (%s)", fd,
            static_cast<int>(d.opts[i].opt), d.opts[i].value, std::strerror(to_errno(e)));
      }
    }
    if (d.unreplayable != 0) warn_unreplayable(d, fd);
  }
  int fl = PNO_REAL(fcntl)(fd, F_GETFL);
  int fdfl = PNO_REAL(fcntl)(fd, F_GETFD);
  if (fl < 0 || fdfl < 0) {
    st->ch->close(s);
    return Errc::badf;
  }
  Errc e = act(s);
  if (e != Errc::ok && e != Errc::in_progress) {
    st->ch->close(s);
    return e;
  }
  d.sock.store(s, std::memory_order_release);
  d.nonblock.store((fl & O_NONBLOCK) != 0 ? 1 : 0);
  // The table says "socket" before the kernel socket goes: a concurrent call never reaches the
  // placeholder.
  st->fds.set(fd, FdKind::socket, ref.index);
  epoll_adopt_pending(st, fd, ref.index);
  if (make_placeholder(fd, (fdfl & FD_CLOEXEC) != 0) < 0) {
    log(LogLevel::error, "socket %d: cannot make its placeholder fd (%s)", fd, std::strerror(errno));
  }
  return e;
}

// ---------------------------------------------------------------------------------------------
// Data path helpers

/// A cursor over an iovec array that yields windows of at most 64 entries, the first one
/// trimmed by what was already transferred.
class IovCursor {
 public:
  IovCursor(const iovec* iov, std::size_t n) : iov_(iov), n_(n) {
    for (std::size_t i = 0; i < n; ++i) total_ += iov[i].iov_len;
  }
  [[nodiscard]] std::size_t total() const { return total_; }
  [[nodiscard]] std::size_t done() const { return done_; }
  [[nodiscard]] bool finished() const { return done_ >= total_; }
  std::span<const iovec> window() {
    std::size_t k = 0;
    std::size_t off = off_;
    for (std::size_t i = i_; i < n_ && k < std::size(win_); ++i) {
      if (iov_[i].iov_len <= off) {
        off = 0;
        continue;
      }
      win_[k].iov_base = static_cast<char*>(iov_[i].iov_base) + off;
      win_[k].iov_len = iov_[i].iov_len - off;
      off = 0;
      ++k;
    }
    return {win_, k};
  }
  void advance(std::size_t bytes) {
    done_ += bytes;
    while (bytes > 0 && i_ < n_) {
      std::size_t left = iov_[i_].iov_len - off_;
      if (bytes < left) {
        off_ += bytes;
        return;
      }
      bytes -= left;
      ++i_;
      off_ = 0;
    }
  }

 private:
  const iovec* iov_;
  std::size_t n_;
  std::size_t i_ = 0, off_ = 0;
  std::size_t total_ = 0, done_ = 0;
  iovec win_[64];
};

/// A call's SO_RCVTIMEO/SO_SNDTIMEO budget: Linux counts it for the whole call, not per wait.
class CallTimeout {
 public:
  explicit CallTimeout(std::int64_t timeo_us)
      : timeo_(timeo_us), deadline_(timeo_us > 0 ? now_ns() + timeo_us * 1000 : 0) {}
  /// What is left for the next wait, in wait_socket()'s terms (0 forever, -1 none left).
  [[nodiscard]] std::int64_t left_us() const {
    if (timeo_ <= 0) return timeo_;
    std::int64_t left = (deadline_ - now_ns()) / 1000;
    return left > 0 ? left : -1;
  }

 private:
  std::int64_t timeo_;
  std::int64_t deadline_;
};

bool nonblocking(const SockDesc& d, int flags) {
  return (flags & MSG_DONTWAIT) != 0 || d.nonblock.load(std::memory_order_relaxed) != 0;
}

ssize_t do_recv(State* st, SockRef r, const iovec* iov, std::size_t iovcnt, int flags) {
  if ((flags & MSG_OOB) != 0) return fail(EINVAL);  // no urgent data is ever kept (SO_OOBINLINE off)
  if ((flags & MSG_ERRQUEUE) != 0) return fail(EAGAIN);
  if ((flags & MSG_TRUNC) != 0) return fail(EOPNOTSUPP);
  if (iovcnt > IOV_MAX) return fail(EINVAL);
  bool peek = (flags & MSG_PEEK) != 0;
  bool nb = nonblocking(*r.d, flags);
  CallTimeout timeo(nb ? -1 : r.d->rcvtimeo_us.load(std::memory_order_relaxed));
  bool waitall = (flags & MSG_WAITALL) != 0 && !peek && !nb;
  IovCursor cur(iov, iovcnt);
  if (cur.total() == 0) {
    // Linux reports errors and EOF even for zero-length reads only through poll; a 0-byte read
    // returns 0 at once.
    return 0;
  }
  for (;;) {
    Result<std::size_t> got = st->ch->recv(r.s, cur.window(), peek);
    if (got) {
      if (*got == 0) {
        // EOF, except on a socket whose failed connect() disconnected it (Linux: TCP_CLOSE with
        // no shutdown flags, tcp_recvmsg gives ENOTCONN).
        if (cur.done() == 0 && r.d->conn_state.load(std::memory_order_relaxed) ==
                                   static_cast<std::uint32_t>(ConnState::failed)) {
          return fail(ENOTCONN);
        }
        return static_cast<ssize_t>(cur.done());
      }
      cur.advance(*got);
      if (!waitall || cur.finished()) return static_cast<ssize_t>(cur.done());
      continue;
    }
    if (got.error() != Errc::again) {
      if (cur.done() > 0) return static_cast<ssize_t>(cur.done());
      return fail(to_errno(got.error()));
    }
    if (std::uint32_t rd = ready_of(st, r.s); (rd & (EPOLLERR | EPOLLHUP)) != 0) {
      // A pending error with nothing to read: report it (once), as tcp_recvmsg() does. A hang-up
      // with an empty ring is EOF: the channel shows EPOLLHUP only once every byte before it is
      // in the ring. Never wait on either.
      if (cur.done() > 0) return static_cast<ssize_t>(cur.done());
      Errc err = st->ch->alive() ? st->ch->take_error(r.s) : Errc::conn_reset;
      if (err != Errc::ok) return fail(to_errno(err));
      if ((rd & EPOLLHUP) != 0) return 0;
    }
    if (timeo.left_us() < 0) return cur.done() > 0 ? static_cast<ssize_t>(cur.done()) : fail(EAGAIN);
    int w = wait_socket(st, r.s, EPOLLIN | EPOLLHUP, timeo.left_us());
    if (w != 0) return cur.done() > 0 ? static_cast<ssize_t>(cur.done()) : fail(w);
  }
}

void raise_sigpipe(int flags) {
  // Linux sends SIGPIPE to the calling thread on EPIPE unless MSG_NOSIGNAL (net/core/stream.c).
  if ((flags & MSG_NOSIGNAL) == 0) ::raise(SIGPIPE);
}

ssize_t do_send(State* st, SockRef r, const iovec* iov, std::size_t iovcnt, int flags) {
  if ((flags & (MSG_OOB | MSG_FASTOPEN)) != 0) return fail(EOPNOTSUPP);
  if (iovcnt > IOV_MAX) return fail(EINVAL);
  bool nb = nonblocking(*r.d, flags);
  CallTimeout timeo(nb ? -1 : r.d->sndtimeo_us.load(std::memory_order_relaxed));
  bool more = (flags & MSG_MORE) != 0;
  IovCursor cur(iov, iovcnt);
  for (;;) {
    Result<std::size_t> put = st->ch->send(r.s, cur.window(), more);
    if (put) {
      cur.advance(*put);
      if (cur.finished() || nb) return static_cast<ssize_t>(cur.done());
      continue;
    }
    if (put.error() != Errc::again) {
      if (cur.done() > 0) return static_cast<ssize_t>(cur.done());
      if (put.error() == Errc::pipe) raise_sigpipe(flags);
      return fail(to_errno(put.error()));
    }
    if (std::uint32_t rd = ready_of(st, r.s); (rd & (EPOLLHUP | EPOLLERR)) != 0) {
      // The connection is gone but the ring claims to be full: EPIPE (the error first, if any).
      if (cur.done() > 0) return static_cast<ssize_t>(cur.done());
      Errc err = st->ch->alive() ? st->ch->take_error(r.s) : Errc::pipe;
      if (err == Errc::ok) err = Errc::pipe;
      if (err == Errc::pipe) raise_sigpipe(flags);
      return fail(to_errno(err));
    }
    if (timeo.left_us() < 0) return cur.done() > 0 ? static_cast<ssize_t>(cur.done()) : fail(EAGAIN);
    int w = wait_socket(st, r.s, EPOLLOUT | EPOLLHUP, timeo.left_us());
    if (w != 0) return cur.done() > 0 ? static_cast<ssize_t>(cur.done()) : fail(w);
  }
}

ssize_t do_sendfile(State* st, SockRef r, int in_fd, off_t* offset, std::size_t count) {
  bool nb = nonblocking(*r.d, 0);
  CallTimeout timeo(nb ? -1 : r.d->sndtimeo_us.load(std::memory_order_relaxed));
  std::size_t done = 0;
  while (done < count) {
    Result<std::size_t> put = st->ch->send_file(r.s, in_fd, offset, count - done);
    if (put) {
      if (*put == 0) break;  // end of file
      done += *put;
      if (nb) break;
      continue;
    }
    if (put.error() != Errc::again) {
      if (done > 0) break;
      if (put.error() == Errc::pipe) raise_sigpipe(0);
      return fail(to_errno(put.error()));
    }
    if ((ready_of(st, r.s) & (EPOLLHUP | EPOLLERR)) != 0) {
      if (done > 0) break;
      raise_sigpipe(0);
      return fail(EPIPE);
    }
    if (timeo.left_us() < 0) {
      if (done > 0) break;
      return fail(EAGAIN);
    }
    int w = wait_socket(st, r.s, EPOLLOUT | EPOLLHUP, timeo.left_us());
    if (w != 0) {
      if (done > 0) break;
      return fail(w);
    }
  }
  return static_cast<ssize_t>(done);
}

/// The outcome of a connect() in progress, as net/ipv4/af_inet.c __inet_stream_connect() reports
/// it: still in progress (EALREADY / wait), failed (the pending error, once; ECONNABORTED when it was
/// already taken through SO_ERROR) or done (0, and SS_CONNECTED from then on).
int resolve_connect(State* st, SockRef r, bool first_call) {
  SockDesc& d = *r.d;
  std::uint32_t rd = ready_of(st, r.s);
  if ((rd & (EPOLLOUT | EPOLLERR | EPOLLHUP)) == 0) {
    bool nb = d.nonblock.load() != 0;
    std::int64_t timeo = nb ? -1 : d.sndtimeo_us.load();
    if (timeo < 0) return fail(first_call ? EINPROGRESS : EALREADY);
    int w = wait_socket(st, r.s, EPOLLOUT | EPOLLHUP, timeo);
    if (w == EAGAIN) return fail(first_call ? EINPROGRESS : EALREADY);  // SO_SNDTIMEO expired
    if (w != 0) return fail(w);
    rd = ready_of(st, r.s);
  }
  if ((rd & (EPOLLERR | EPOLLHUP)) != 0) {
    Errc err = st->ch->alive() ? st->ch->take_error(r.s) : Errc::conn_reset;
    d.conn_state.store(static_cast<std::uint32_t>(ConnState::failed));
    return fail(err != Errc::ok ? to_errno(err) : ECONNABORTED);
  }
  d.conn_state.store(static_cast<std::uint32_t>(ConnState::connected));
  return 0;
}

/// connect() on an offloaded socket (also right after the hand-over started the handshake).
int connect_offloaded(State* st, SockRef r, const Endpoint* remote, Errc started) {
  SockDesc& d = *r.d;
  if (d.listening.load() != 0) return fail(EISCONN);  // a listener is not in TCP_CLOSE
  auto state = static_cast<ConnState>(d.conn_state.load());
  if (state == ConnState::connected) return fail(EISCONN);
  if (state == ConnState::connecting) return resolve_connect(st, r, false);
  Errc e = started;
  if (remote != nullptr) e = st->ch->connect(r.s, *remote);
  if (e == Errc::ok) {
    d.conn_state.store(static_cast<std::uint32_t>(ConnState::connected));
    return 0;
  }
  if (e != Errc::in_progress) return fail(to_errno(e));
  d.conn_state.store(static_cast<std::uint32_t>(ConnState::connecting));
  if (d.nonblock.load() != 0) return fail(EINPROGRESS);
  return resolve_connect(st, r, true);
}

int accept_impl(State* st, int fd, sockaddr* addr, socklen_t* addrlen, int flags) {
  SockRef r = offloaded(st, fd);
  if ((flags & ~(SOCK_NONBLOCK | SOCK_CLOEXEC)) != 0) return fail(EINVAL);
  if (addr != nullptr && addrlen == nullptr) return fail(EFAULT);
  if (addrlen != nullptr && static_cast<int>(*addrlen) < 0) return fail(EINVAL);
  bool nb = r.d->nonblock.load() != 0;
  CallTimeout timeo(nb ? -1 : r.d->rcvtimeo_us.load());
  Endpoint peer{};
  HostSocket ns = channel::kNoSocket;
  for (;;) {
    Result<HostSocket> a = st->ch->accept(r.s, &peer);
    if (a) {
      ns = *a;
      break;
    }
    if (a.error() != Errc::again) return fail(to_errno(a.error()));
    if (timeo.left_us() < 0) return fail(EAGAIN);
    if (!st->ch->alive()) return fail(ECONNABORTED);
    if ((ready_of(st, r.s) & (EPOLLERR | EPOLLHUP)) != 0) return fail(EINVAL);  // not listening
    int w = wait_socket(st, r.s, EPOLLIN | EPOLLHUP, timeo.left_us());
    if (w != 0) return fail(w);
  }
  std::uint32_t idx = st->socks.alloc();
  if (idx == 0) {
    st->ch->close(ns);
    return fail(ENFILE);
  }
  int nfd = make_placeholder(-1, (flags & SOCK_CLOEXEC) != 0);
  if (nfd < 0 || !st->fds.in_range(nfd)) {
    int e = nfd < 0 ? errno : EMFILE;
    if (nfd >= 0) PNO_REAL(close)(nfd);
    st->ch->close(ns);
    st->socks.free(idx);
    return fail(e);
  }
  SockDesc& d = st->socks[idx];
  d.reset();
  d.refs.store(1);
  d.sock.store(ns);
  d.nonblock.store((flags & SOCK_NONBLOCK) != 0 ? 1 : 0);  // not inherited from the listener
  d.conn_state.store(static_cast<std::uint32_t>(ConnState::connected));
  FdRef old = st->fds.take(nfd);
  if (old.kind != FdKind::kernel) untrack_fd(st, nfd, old);
  st->fds.set(nfd, FdKind::socket, idx);
  if (addr != nullptr) endpoint_to(peer, addr, addrlen);
  return nfd;
}

/// A new fd `nfd` now refers to what `ofd` referred to (dup, dup2, F_DUPFD).
void track_dup(State* st, int ofd, FdRef o, int nfd) {
  FdRef old = st->fds.take(nfd);
  if (old.kind != FdKind::kernel) untrack_fd(st, nfd, old);
  switch (o.kind) {
    case FdKind::socket: {
      if (!st->fds.in_range(nfd)) {
        log(LogLevel::warn, "dup of socket %d to %d: beyond the shim's table", ofd, nfd);
        return;
      }
      SockDesc& d = st->socks[o.index];
      d.refs.fetch_add(1);
      st->ch->retain(d.sock.load());
      st->fds.set(nfd, FdKind::socket, o.index);
      return;
    }
    case FdKind::epoll:
      if (!st->fds.in_range(nfd)) return;
      st->epolls[o.index].refs.fetch_add(1);
      st->fds.set(nfd, FdKind::epoll, o.index);
      return;
    case FdKind::pending:
      // Two fds on one kernel socket cannot both be swapped at hand-over: keep it in the kernel.
      if (st->fds.take_if(ofd, o)) release_desc(st, o.index);
      return;
    default:
      return;
  }
}

bool protected_fd(State* st, int fd) {
  if (t_in_channel) return false;
  if (st->fds.get(fd).kind == FdKind::internal) return true;
  HostChannel* ch = attached_channel(st);
  return ch != nullptr && ch->owns_fd(fd);
}

/// Moves the channel's or the shim's own fd off number `fd` (the application believes the number
/// is free: it never opened it). True when the number is free now.
bool relocate_protected(State* st, int fd) {
  FdRef r = st->fds.get(fd);
  int moved = -1;
  if (r.kind == FdKind::internal) {
    moved = epoll_relocate_kick(st, fd, r);
  } else {
    InChannel guard;
    moved = st->ch->relocate_fd(fd);
  }
  if (moved < 0) {
    log(LogLevel::warn, "fd %d is the engine channel's and cannot be moved (%s)", fd, std::strerror(errno));
    return false;
  }
  if (log_enabled(LogLevel::debug)) log(LogLevel::debug, "moved the channel's fd %d to %d", fd, moved);
  return true;
}

int dup_impl(State* st, int ofd, int nfd, int flags, bool is_dup2) {
  if (ofd == nfd) {
    if (!is_dup2) return fail(EINVAL);  // dup3
    return PNO_REAL(fcntl)(ofd, F_GETFD) < 0 ? -1 : nfd;
  }
  if (protected_fd(st, nfd)) {
    // Linux would close the target and dup onto it: move our fd away first. Only if no number
    // is free does the call fail (EBUSY, as for a number the kernel is still setting up).
    if (PNO_REAL(fcntl)(ofd, F_GETFD) < 0) return -1;  // EBADF before moving anything
    if (!relocate_protected(st, nfd)) return fail(EBUSY);
  }
  FdRef o = st->fds.get(ofd);
  int r = PNO_REAL(dup3)(ofd, nfd, flags);
  if (r < 0) return r;
  track_dup(st, ofd, o, r);
  return r;
}

int close_impl(State* st, int fd) {
  if (protected_fd(st, fd)) {
    // The application closing a number it never opened: it must be free afterwards (a later
    // F_GETFD says EBADF, dup2 onto it works), so our fd moves elsewhere. Success either way.
    (void)relocate_protected(st, fd);
    return 0;
  }
  FdRef r = st->fds.take(fd);
  if (r.kind != FdKind::kernel) untrack_fd(st, fd, r);
  return PNO_REAL(close)(fd);
}

Result<Endpoint> parse_addr(const sockaddr* a, socklen_t len) {
  Result<Endpoint> ep = endpoint_from(a, len);
  if (!ep && ep.error() == Errc::op_not_supp) return static_cast<Errc>(EAFNOSUPPORT);
  return ep;
}

int bind_impl(State* st, int fd, const sockaddr* a, socklen_t len) {
  FdRef ref = st->fds.get(fd);
  if (ref.kind == FdKind::socket) {
    Result<Endpoint> ep = parse_addr(a, len);
    if (!ep) return fail(to_errno(ep.error()));
    Errc e = st->ch->bind(st->socks[ref.index].sock.load(), *ep);
    return e == Errc::ok ? 0 : fail(to_errno(e));
  }
  if (ref.kind != FdKind::pending) return PNO_REAL(bind)(fd, a, len);
  Result<Endpoint> ep = endpoint_from(a, len);
  if (!ep) return PNO_REAL(bind)(fd, a, len);  // the kernel reports the error
  if ((*ep).addr.is_any() && (*ep).port == 0) {
    // bind(INADDR_ANY:0) says nothing yet about where the socket goes: connect() or listen()
    // decides. The kernel socket takes the bind meanwhile (getsockname works). No attach yet.
    int r = PNO_REAL(bind)(fd, a, len);
    if (r == 0) st->socks[ref.index].bound_any_port0 = 1;
    return r;
  }
  // Loopback is never the engine's: decided without attaching.
  if ((*ep).addr.is_loopback() || ensure_attached(st) == nullptr ||
      route_for_bind(st->addrs, (*ep).addr) == Route::kernel) {
    int r = PNO_REAL(bind)(fd, a, len);
    if (r == 0 && st->fds.take_if(fd, ref)) release_desc(st, ref.index);
    return r;
  }
  Endpoint local = *ep;
  Errc e = handover(st, fd, ref, [&](HostSocket s) { return st->ch->bind(s, local); });
  return e == Errc::ok ? 0 : fail(to_errno(e));
}

int listen_impl(State* st, int fd, int backlog) {
  FdRef ref = st->fds.get(fd);
  if (ref.kind == FdKind::socket) {
    SockDesc& d = st->socks[ref.index];
    Errc e = st->ch->listen(d.sock.load(), backlog);
    if (e != Errc::ok) return fail(to_errno(e));
    d.listening.store(1);
    return 0;
  }
  if (ref.kind != FdKind::pending) return PNO_REAL(listen)(fd, backlog);
  if (ensure_attached(st) == nullptr) {
    if (st->fds.take_if(fd, ref)) release_desc(st, ref.index);
    return PNO_REAL(listen)(fd, backlog);
  }
  // An unbound listener binds to the wildcard address (Linux autobind): the engine's.
  Errc e = handover(st, fd, ref, [&](HostSocket s) {
    Errc b = st->ch->bind(s, Endpoint{Ipv4Addr::any(), 0});
    if (b != Errc::ok) return b;
    return st->ch->listen(s, backlog);
  });
  if (e != Errc::ok) return fail(to_errno(e));
  st->socks[ref.index].listening.store(1);
  return 0;
}

int connect_impl(State* st, int fd, const sockaddr* a, socklen_t len) {
  FdRef ref = st->fds.get(fd);
  if (ref.kind == FdKind::socket) {
    SockRef r = offloaded(st, fd);
    Result<Endpoint> ep = parse_addr(a, len);
    if (!ep) {
      // connect(AF_UNSPEC) disconnects a Linux TCP socket; the engine has no such operation.
      return fail(ep.error() == static_cast<Errc>(EAFNOSUPPORT) ? EOPNOTSUPP : to_errno(ep.error()));
    }
    Endpoint remote = *ep;
    return connect_offloaded(st, r, &remote, Errc::ok);
  }
  if (ref.kind != FdKind::pending) return PNO_REAL(connect)(fd, a, len);
  Result<Endpoint> ep = endpoint_from(a, len);
  // Loopback, the wildcard, multicast and broadcast are never the engine's: decided without
  // attaching. Anything else needs the engine's addresses, which come with the attach.
  if (!ep || (*ep).addr.is_loopback() || (*ep).addr.is_any() || (*ep).addr.is_multicast() ||
      (*ep).addr == Ipv4Addr::broadcast() || ensure_attached(st) == nullptr ||
      route_for_connect(st->addrs, (*ep).addr) == Route::kernel) {
    if (st->fds.take_if(fd, ref)) release_desc(st, ref.index);
    return PNO_REAL(connect)(fd, a, len);
  }
  Endpoint remote = *ep;
  Errc e = handover(st, fd, ref, [&](HostSocket s) { return st->ch->connect(s, remote); });
  if (e != Errc::ok && e != Errc::in_progress) return fail(to_errno(e));
  return connect_offloaded(st, offloaded(st, fd), nullptr, e);
}

int write_int(void* optval, socklen_t* optlen, int v) {
  if (optval == nullptr || optlen == nullptr) return fail(EFAULT);
  if (static_cast<int>(*optlen) < 0) return fail(EINVAL);
  socklen_t n = std::min<socklen_t>(*optlen, sizeof(int));
  std::memcpy(optval, &v, n);
  *optlen = n;
  return 0;
}

int getsockopt_impl(State* st, SockRef r, int level, int name, void* optval, socklen_t* optlen) {
  if (optlen == nullptr) return fail(EFAULT);
  if (static_cast<int>(*optlen) < 0) return fail(EINVAL);
  OptInfo oi = classify_opt(level, name);
  SockDesc& d = *r.d;
  switch (oi.cls) {
    case OptClass::unsupported: return fail(ENOPROTOOPT);
    case OptClass::engine_int: {
      Result<int> v = st->ch->getsockopt(r.s, oi.opt);
      if (!v) return fail(to_errno(v.error()));
      return write_int(optval, optlen, oi.boolean ? (*v != 0 ? 1 : 0) : *v);
    }
    case OptClass::linger: {
      linger l{d.linger_on.load(), d.linger_secs.load()};
      socklen_t n = std::min<socklen_t>(*optlen, sizeof l);
      if (optval == nullptr) return fail(EFAULT);
      std::memcpy(optval, &l, n);
      *optlen = n;
      return 0;
    }
    case OptClass::rcvtimeo:
    case OptClass::sndtimeo: {
      std::int64_t us = (oi.cls == OptClass::rcvtimeo ? d.rcvtimeo_us : d.sndtimeo_us).load();
      timeval tv{};
      if (us > 0) {
        tv.tv_sec = us / 1000000;
        tv.tv_usec = us % 1000000;
      }
      socklen_t n = std::min<socklen_t>(*optlen, sizeof tv);
      if (optval == nullptr) return fail(EFAULT);
      std::memcpy(optval, &tv, n);
      *optlen = n;
      return 0;
    }
    case OptClass::error: {
      int e = st->ch->alive() ? to_errno(st->ch->take_error(r.s)) : ECONNRESET;
      return write_int(optval, optlen, e);
    }
    case OptClass::type: return write_int(optval, optlen, SOCK_STREAM);
    case OptClass::domain: return write_int(optval, optlen, AF_INET);
    case OptClass::protocol: return write_int(optval, optlen, IPPROTO_TCP);
    case OptClass::acceptconn: return write_int(optval, optlen, d.listening.load() != 0 ? 1 : 0);
    case OptClass::quickack: return write_int(optval, optlen, d.quickack.load() == 0 ? 1 : 0);
    case OptClass::tcp_info: {
      Result<TcpInfo> ti = st->ch->info(r.s);
      if (!ti) return fail(to_errno(ti.error()));
      LinuxTcpInfo li = to_linux_tcp_info(*ti);
      socklen_t n = std::min<socklen_t>(*optlen, sizeof li);
      if (optval == nullptr) return fail(EFAULT);
      std::memcpy(optval, &li, n);
      *optlen = n;
      return 0;
    }
  }
  return fail(ENOPROTOOPT);
}

Result<int> read_int_opt(const void* optval, socklen_t optlen) {
  if (optlen < static_cast<socklen_t>(sizeof(int))) return Errc::inval;
  if (optval == nullptr) return static_cast<Errc>(EFAULT);
  int v;
  std::memcpy(&v, optval, sizeof v);
  return v;
}

int setsockopt_impl(State* st, SockRef r, int level, int name, const void* optval, socklen_t optlen) {
  OptInfo oi = classify_opt(level, name);
  SockDesc& d = *r.d;
  switch (oi.cls) {
    case OptClass::engine_int: {
      Result<int> v = read_int_opt(optval, optlen);
      if (!v) return fail(to_errno(v.error()));
      int val = oi.boolean ? (*v != 0 ? 1 : 0) : *v;
      Errc e = st->ch->setsockopt(r.s, oi.opt, val);
      return e == Errc::ok ? 0 : fail(to_errno(e));
    }
    case OptClass::linger: {
      if (optlen < static_cast<socklen_t>(sizeof(linger))) return fail(EINVAL);
      if (optval == nullptr) return fail(EFAULT);
      linger l;
      std::memcpy(&l, optval, sizeof l);
      Errc e = st->ch->setsockopt(r.s, SockOpt::linger, l.l_onoff != 0 ? std::max(l.l_linger, 0) : -1);
      if (e != Errc::ok) return fail(to_errno(e));
      d.linger_on.store(l.l_onoff != 0 ? 1 : 0);
      d.linger_secs.store(l.l_linger);
      return 0;
    }
    case OptClass::rcvtimeo:
    case OptClass::sndtimeo: {
      if (optval == nullptr) return fail(EFAULT);
      Result<std::int64_t> us = timeval_to_us(optval, optlen);
      if (!us) return fail(to_errno(us.error()));
      (oi.cls == OptClass::rcvtimeo ? d.rcvtimeo_us : d.sndtimeo_us).store(*us);
      return 0;
    }
    case OptClass::quickack: {
      Result<int> v = read_int_opt(optval, optlen);
      if (!v) return fail(to_errno(v.error()));
      d.quickack.store(*v == 0 ? 1 : 0);
      return 0;
    }
    default:
      return fail(ENOPROTOOPT);
  }
}

/// setsockopt() on a pending socket: the kernel socket takes it (and validates it), the shim
/// remembers what must be replayed to the engine at hand-over.
void record_pending_opt(SockDesc& d, int level, int name, const void* optval, socklen_t optlen) {
  OptInfo oi = classify_opt(level, name);
  SpinGuard lk(d.lock);
  switch (oi.cls) {
    case OptClass::engine_int: {
      Result<int> v = read_int_opt(optval, optlen);
      if (v && !d.record(oi.opt, oi.boolean ? (*v != 0 ? 1 : 0) : *v)) {
        d.unreplayable = 1;
        d.unreplayable_level = level;
        d.unreplayable_name = name;
      }
      return;
    }
    case OptClass::linger: {
      linger l;
      std::memcpy(&l, optval, sizeof l);
      d.record(SockOpt::linger, l.l_onoff != 0 ? std::max(l.l_linger, 0) : -1);
      d.linger_on.store(l.l_onoff != 0 ? 1 : 0);
      d.linger_secs.store(l.l_linger);
      return;
    }
    case OptClass::rcvtimeo:
    case OptClass::sndtimeo: {
      Result<std::int64_t> us = timeval_to_us(optval, optlen);
      if (us) (oi.cls == OptClass::rcvtimeo ? d.rcvtimeo_us : d.sndtimeo_us).store(*us);
      return;
    }
    case OptClass::quickack: {
      Result<int> v = read_int_opt(optval, optlen);
      if (v) d.quickack.store(*v == 0 ? 1 : 0);
      return;
    }
    default:
      d.unreplayable = 1;
      d.unreplayable_level = level;
      d.unreplayable_name = name;
      return;
  }
}

int fcntl_impl(State* st, int fd, int cmd, long arg) {
  auto real = [](int f, int c, long a) { return PNO_REAL(fcntl)(f, c, a); };
  FdRef ref = st->fds.get(fd);
  if (ref.kind == FdKind::kernel || ref.kind == FdKind::internal) return real(fd, cmd, arg);
  switch (cmd) {
    case F_DUPFD:
    case F_DUPFD_CLOEXEC: {
      int nfd = real(fd, cmd, arg);
      if (nfd >= 0) track_dup(st, fd, ref, nfd);
      return nfd;
    }
    case F_GETFL:
      if (ref.kind == FdKind::socket) {
        int fl = O_RDWR;
        if (st->socks[ref.index].nonblock.load() != 0) fl |= O_NONBLOCK;
        return fl;
      }
      return real(fd, cmd, arg);
    case F_SETFL:
      if (ref.kind == FdKind::socket) {
        st->socks[ref.index].nonblock.store((arg & O_NONBLOCK) != 0 ? 1 : 0);
        return 0;
      }
      return real(fd, cmd, arg);
    default:
      return real(fd, cmd, arg);
  }
}

int ioctl_impl(State* st, SockRef r, unsigned long req, void* arg) {
  switch (req) {
    case FIONBIO: {
      if (arg == nullptr) return fail(EFAULT);
      int on;
      std::memcpy(&on, arg, sizeof on);
      r.d->nonblock.store(on != 0 ? 1 : 0);
      return 0;
    }
    case FIONREAD: {  // == SIOCINQ
      if (arg == nullptr) return fail(EFAULT);
      if (r.d->listening.load() != 0) return fail(EINVAL);
      Result<std::size_t> n = st->ch->readable_bytes(r.s);
      if (!n) return fail(to_errno(n.error()));
      int v = static_cast<int>(std::min<std::size_t>(*n, INT32_MAX));
      std::memcpy(arg, &v, sizeof v);
      return 0;
    }
    case FIOCLEX:
    case FIONCLEX:
      return -2;  // acts on the fd itself: the placeholder takes it
    default:
      return fail(ENOTTY);
  }
}

ssize_t recvmsg_impl(State* st, SockRef r, msghdr* msg, int flags) {
  if (msg == nullptr) return fail(EFAULT);
  ssize_t n = do_recv(st, r, msg->msg_iov, msg->msg_iovlen, flags);
  if (n >= 0) {
    msg->msg_namelen = 0;  // TCP reports no source address (net/socket.c ____sys_recvmsg)
    msg->msg_controllen = 0;
    msg->msg_flags = 0;
  }
  return n;
}

}  // namespace

// ---------------------------------------------------------------------------------------------
// Shared with the wait file

void untrack_fd(State* st, int fd, FdRef r) {
  (void)fd;
  switch (r.kind) {
    case FdKind::socket: {
      SockDesc& d = st->socks[r.index];
      st->ch->close(d.sock.load());
      release_desc(st, r.index);
      return;
    }
    case FdKind::pending:
      release_desc(st, r.index);
      return;
    case FdKind::epoll:
      epoll_release(st, r.index);
      return;
    default:
      return;
  }
}

}  // namespace pno::shim

// =============================================================================================
// The interposed functions

using namespace pno;
using namespace pno::shim;

#define PNO_EXPORT extern "C" __attribute__((visibility("default")))

PNO_EXPORT pid_t fork() noexcept {
  const pid_t r = PNO_REAL(fork)();
  if (r != 0) fork_done_parent(r);
  return r;
}

PNO_EXPORT int socket(int domain, int type, int protocol) noexcept {
  int fd = PNO_REAL(socket)(domain, type, protocol);
  State* st = state();
  if (fd < 0 || st == nullptr) return fd;
  bool tcp4 = domain == AF_INET && (type & 0xf) == SOCK_STREAM &&
              (protocol == 0 || protocol == IPPROTO_TCP);
  track_new(st, fd, tcp4);
  return fd;
}

PNO_EXPORT int socketpair(int domain, int type, int protocol, int sv[2]) noexcept {
  int r = PNO_REAL(socketpair)(domain, type, protocol, sv);
  State* st = state();
  if (r == 0 && st != nullptr) {
    track_new(st, sv[0], false);
    track_new(st, sv[1], false);
  }
  return r;
}

PNO_EXPORT int bind(int fd, const sockaddr* addr, socklen_t len) noexcept {
  State* st = state();
  if (st == nullptr) return PNO_REAL(bind)(fd, addr, len);
  return bind_impl(st, fd, addr, len);
}

PNO_EXPORT int listen(int fd, int backlog) noexcept {
  State* st = state();
  if (st == nullptr) return PNO_REAL(listen)(fd, backlog);
  return listen_impl(st, fd, backlog);
}

PNO_EXPORT int connect(int fd, const sockaddr* addr, socklen_t len) {
  State* st = state();
  if (st == nullptr) return PNO_REAL(connect)(fd, addr, len);
  return connect_impl(st, fd, addr, len);
}

PNO_EXPORT int accept4(int fd, sockaddr* addr, socklen_t* len, int flags) {
  State* st = state();
  if (st == nullptr || !offloaded(st, fd)) {
    int r = PNO_REAL(accept4)(fd, addr, len, flags);
    if (r >= 0 && st != nullptr) track_new(st, r, false);
    return r;
  }
  return accept_impl(st, fd, addr, len, flags);
}

PNO_EXPORT int accept(int fd, sockaddr* addr, socklen_t* len) {
  State* st = state();
  if (st == nullptr || !offloaded(st, fd)) {
    int r = PNO_REAL(accept)(fd, addr, len);
    if (r >= 0 && st != nullptr) track_new(st, r, false);
    return r;
  }
  return accept_impl(st, fd, addr, len, 0);
}

PNO_EXPORT ssize_t read(int fd, void* buf, size_t n) {
  State* st = state();
  SockRef r;
  if (st == nullptr || !(r = offloaded(st, fd))) return PNO_REAL(read)(fd, buf, n);
  iovec iov{buf, n};
  return do_recv(st, r, &iov, 1, 0);
}

PNO_EXPORT ssize_t write(int fd, const void* buf, size_t n) {
  State* st = state();
  SockRef r;
  if (st == nullptr || !(r = offloaded(st, fd))) return PNO_REAL(write)(fd, buf, n);
  iovec iov{const_cast<void*>(buf), n};
  return do_send(st, r, &iov, 1, 0);
}

PNO_EXPORT ssize_t readv(int fd, const iovec* iov, int cnt) {
  State* st = state();
  SockRef r;
  if (st == nullptr || !(r = offloaded(st, fd))) return PNO_REAL(readv)(fd, iov, cnt);
  if (cnt < 0) return fail(EINVAL);
  return do_recv(st, r, iov, static_cast<std::size_t>(cnt), 0);
}

PNO_EXPORT ssize_t writev(int fd, const iovec* iov, int cnt) {
  State* st = state();
  SockRef r;
  if (st == nullptr || !(r = offloaded(st, fd))) return PNO_REAL(writev)(fd, iov, cnt);
  if (cnt < 0) return fail(EINVAL);
  return do_send(st, r, iov, static_cast<std::size_t>(cnt), 0);
}

PNO_EXPORT ssize_t recv(int fd, void* buf, size_t n, int flags) {
  State* st = state();
  SockRef r;
  if (st == nullptr || !(r = offloaded(st, fd))) return PNO_REAL(recv)(fd, buf, n, flags);
  iovec iov{buf, n};
  return do_recv(st, r, &iov, 1, flags);
}

PNO_EXPORT ssize_t recvfrom(int fd, void* buf, size_t n, int flags, sockaddr* addr, socklen_t* alen) {
  State* st = state();
  SockRef r;
  if (st == nullptr || !(r = offloaded(st, fd))) return PNO_REAL(recvfrom)(fd, buf, n, flags, addr, alen);
  iovec iov{buf, n};
  ssize_t got = do_recv(st, r, &iov, 1, flags);
  if (got >= 0 && addr != nullptr && alen != nullptr) *alen = 0;  // TCP has no source address
  return got;
}

PNO_EXPORT ssize_t recvmsg(int fd, msghdr* msg, int flags) {
  State* st = state();
  SockRef r;
  if (st == nullptr || !(r = offloaded(st, fd))) return PNO_REAL(recvmsg)(fd, msg, flags);
  return recvmsg_impl(st, r, msg, flags);
}

PNO_EXPORT int recvmmsg(int fd, mmsghdr* vec, unsigned int vlen, int flags, timespec* timeout) {
  State* st = state();
  SockRef r;
  if (st == nullptr || !(r = offloaded(st, fd))) return PNO_REAL(recvmmsg)(fd, vec, vlen, flags, timeout);
  if (vec == nullptr) return fail(EFAULT);
  unsigned int i = 0;
  for (; i < vlen; ++i) {
    ssize_t n = recvmsg_impl(st, r, &vec[i].msg_hdr, flags);
    if (n < 0) {
      if (i > 0) break;
      return -1;
    }
    vec[i].msg_len = static_cast<unsigned int>(n);
    if ((flags & MSG_WAITFORONE) != 0) flags |= MSG_DONTWAIT;
    if (n == 0) {
      ++i;
      break;
    }
  }
  return static_cast<int>(i);
}

PNO_EXPORT ssize_t send(int fd, const void* buf, size_t n, int flags) {
  State* st = state();
  SockRef r;
  if (st == nullptr || !(r = offloaded(st, fd))) return PNO_REAL(send)(fd, buf, n, flags);
  iovec iov{const_cast<void*>(buf), n};
  return do_send(st, r, &iov, 1, flags);
}

PNO_EXPORT ssize_t sendto(int fd, const void* buf, size_t n, int flags, const sockaddr* addr, socklen_t alen) {
  State* st = state();
  SockRef r;
  if (st == nullptr || !(r = offloaded(st, fd))) return PNO_REAL(sendto)(fd, buf, n, flags, addr, alen);
  iovec iov{const_cast<void*>(buf), n};
  return do_send(st, r, &iov, 1, flags);  // a connected TCP socket ignores the address
}

PNO_EXPORT ssize_t sendmsg(int fd, const msghdr* msg, int flags) {
  State* st = state();
  SockRef r;
  if (st == nullptr || !(r = offloaded(st, fd))) return PNO_REAL(sendmsg)(fd, msg, flags);
  if (msg == nullptr) return fail(EFAULT);
  return do_send(st, r, msg->msg_iov, msg->msg_iovlen, flags);
}

PNO_EXPORT int sendmmsg(int fd, mmsghdr* vec, unsigned int vlen, int flags) {
  State* st = state();
  SockRef r;
  if (st == nullptr || !(r = offloaded(st, fd))) return PNO_REAL(sendmmsg)(fd, vec, vlen, flags);
  if (vec == nullptr) return fail(EFAULT);
  unsigned int i = 0;
  for (; i < vlen; ++i) {
    ssize_t n = do_send(st, r, vec[i].msg_hdr.msg_iov, vec[i].msg_hdr.msg_iovlen, flags);
    if (n < 0) {
      if (i > 0) break;
      return -1;
    }
    vec[i].msg_len = static_cast<unsigned int>(n);
  }
  return static_cast<int>(i);
}

PNO_EXPORT ssize_t sendfile(int out_fd, int in_fd, off_t* offset, size_t count) noexcept {
  State* st = state();
  if (st == nullptr) return PNO_REAL(sendfile)(out_fd, in_fd, offset, count);
  if (offloaded(st, in_fd)) return fail(EINVAL);  // the source must be mmap-able (sendfile(2))
  SockRef r = offloaded(st, out_fd);
  if (!r) return PNO_REAL(sendfile)(out_fd, in_fd, offset, count);
  return do_sendfile(st, r, in_fd, offset, count);
}

PNO_EXPORT ssize_t sendfile64(int out_fd, int in_fd, off_t* offset, size_t count) noexcept {
  return sendfile(out_fd, in_fd, offset, count);
}

PNO_EXPORT int close(int fd) {
  State* st = state();
  if (st == nullptr) return PNO_REAL(close)(fd);
  return close_impl(st, fd);
}

PNO_EXPORT int close_range(unsigned int first, unsigned int last, int flags) noexcept {
  State* st = state();
  if (st == nullptr || t_in_channel) return PNO_REAL(close_range)(first, last, flags);
  if (first > last) return fail(EINVAL);
  if ((flags & CLOSE_RANGE_CLOEXEC) != 0) return PNO_REAL(close_range)(first, last, flags);
  // Walk the range in pieces between protected fds, untracking what the pieces close.
  unsigned int top = std::min<unsigned int>(last, static_cast<unsigned int>(INT32_MAX));
  unsigned int lo = first;
  auto flush = [&](unsigned int a, unsigned int b) -> int {
    if (a > b) return 0;
    int hw = st->fds.high_water();
    for (unsigned int fd = a; fd <= b && fd < static_cast<unsigned int>(hw); ++fd) {
      FdRef r = st->fds.take(static_cast<int>(fd));
      if (r.kind != FdKind::kernel) untrack_fd(st, static_cast<int>(fd), r);
    }
    return PNO_REAL(close_range)(a, b, flags);
  };
  // No fd can exist at or above RLIMIT_NOFILE: the scan for protected fds stops there.
  rlimit rl{};
  unsigned int scan_end = (::getrlimit(RLIMIT_NOFILE, &rl) == 0 && rl.rlim_cur < (1U << 30))
                              ? static_cast<unsigned int>(rl.rlim_cur)
                              : (1U << 20);
  for (unsigned int fd = first; fd <= top && fd < scan_end; ++fd) {
    if (protected_fd(st, static_cast<int>(fd))) {
      if (fd > lo && flush(lo, fd - 1) < 0) return -1;
      lo = fd + 1;
    }
  }
  if (lo <= last) return flush(lo, last);
  return 0;
}

PNO_EXPORT void closefrom(int lowfd) noexcept {
  (void)close_range(static_cast<unsigned int>(std::max(lowfd, 0)), ~0U, 0);
}

PNO_EXPORT int shutdown(int fd, int how) noexcept {
  State* st = state();
  SockRef r;
  if (st == nullptr || !(r = offloaded(st, fd))) return PNO_REAL(shutdown)(fd, how);
  ShutdownHow h;
  switch (how) {
    case SHUT_RD: h = ShutdownHow::read; break;
    case SHUT_WR: h = ShutdownHow::write; break;
    case SHUT_RDWR: h = ShutdownHow::both; break;
    default: return fail(EINVAL);
  }
  Errc e = st->ch->shutdown(r.s, h);
  return e == Errc::ok ? 0 : fail(to_errno(e));
}

namespace {
/// The tail of getsockname/getpeername: the socket's error first (ENOTCONN), then the caller's
/// buffer (EFAULT, EINVAL), in the order Linux checks them.
int name_out(const Result<Endpoint>& ep, sockaddr* addr, socklen_t* len) {
  if (!ep) return fail(to_errno(ep.error()));
  if (addr == nullptr || len == nullptr) return fail(EFAULT);
  if (static_cast<int>(*len) < 0) return fail(EINVAL);
  endpoint_to(*ep, addr, len);
  return 0;
}
}  // namespace

PNO_EXPORT int getsockname(int fd, sockaddr* addr, socklen_t* len) noexcept {
  State* st = state();
  SockRef r;
  if (st == nullptr || !(r = offloaded(st, fd))) return PNO_REAL(getsockname)(fd, addr, len);
  return name_out(st->ch->local_endpoint(r.s), addr, len);
}

PNO_EXPORT int getpeername(int fd, sockaddr* addr, socklen_t* len) noexcept {
  State* st = state();
  SockRef r;
  if (st == nullptr || !(r = offloaded(st, fd))) return PNO_REAL(getpeername)(fd, addr, len);
  return name_out(st->ch->peer_endpoint(r.s), addr, len);
}

PNO_EXPORT int getsockopt(int fd, int level, int name, void* optval, socklen_t* optlen) noexcept {
  State* st = state();
  SockRef r;
  if (st == nullptr || !(r = offloaded(st, fd))) return PNO_REAL(getsockopt)(fd, level, name, optval, optlen);
  return getsockopt_impl(st, r, level, name, optval, optlen);
}

PNO_EXPORT int setsockopt(int fd, int level, int name, const void* optval, socklen_t optlen) noexcept {
  State* st = state();
  if (st == nullptr) return PNO_REAL(setsockopt)(fd, level, name, optval, optlen);
  FdRef ref = st->fds.get(fd);
  if (ref.kind == FdKind::socket) return setsockopt_impl(st, offloaded(st, fd), level, name, optval, optlen);
  int rc = PNO_REAL(setsockopt)(fd, level, name, optval, optlen);
  if (rc == 0 && ref.kind == FdKind::pending) {
    record_pending_opt(st->socks[ref.index], level, name, optval, optlen);
  }
  return rc;
}

namespace {
int fcntl_entry(int fd, int cmd, long arg) {
  State* st = state();
  if (st == nullptr) return PNO_REAL(fcntl)(fd, cmd, arg);
  return fcntl_impl(st, fd, cmd, arg);
}
}  // namespace

// fcntl and fcntl64 take one optional argument of pointer or int size; reading it as a long is
// what glibc itself does.
PNO_EXPORT int fcntl(int fd, int cmd, ...) {
  va_list ap;
  va_start(ap, cmd);
  long arg = va_arg(ap, long);
  va_end(ap);
  return fcntl_entry(fd, cmd, arg);
}

PNO_EXPORT int fcntl64(int fd, int cmd, ...) {
  va_list ap;
  va_start(ap, cmd);
  long arg = va_arg(ap, long);
  va_end(ap);
  return fcntl_entry(fd, cmd, arg);
}

PNO_EXPORT int ioctl(int fd, unsigned long req, ...) noexcept {
  va_list ap;
  va_start(ap, req);
  void* arg = va_arg(ap, void*);
  va_end(ap);
  State* st = state();
  SockRef r;
  if (st == nullptr || !(r = offloaded(st, fd))) return PNO_REAL(ioctl)(fd, req, arg);
  int rc = ioctl_impl(st, r, req, arg);
  return rc == -2 ? PNO_REAL(ioctl)(fd, req, arg) : rc;
}

PNO_EXPORT int dup(int fd) noexcept {
  State* st = state();
  int r = PNO_REAL(dup)(fd);
  if (st != nullptr && r >= 0) track_dup(st, fd, st->fds.get(fd), r);
  return r;
}

PNO_EXPORT int dup2(int ofd, int nfd) noexcept {
  State* st = state();
  if (st == nullptr || t_in_channel) return PNO_REAL(dup2)(ofd, nfd);
  return dup_impl(st, ofd, nfd, 0, true);
}

PNO_EXPORT int dup3(int ofd, int nfd, int flags) noexcept {
  State* st = state();
  if (st == nullptr || t_in_channel) return PNO_REAL(dup3)(ofd, nfd, flags);
  return dup_impl(st, ofd, nfd, flags, false);
}

PNO_EXPORT void _exit(int status) {
  release_all_refs();
  PNO_REAL(_exit)(status);
  __builtin_unreachable();
}

PNO_EXPORT void _Exit(int status) { _exit(status); }

PNO_EXPORT int execve(const char* path, char* const argv[], char* const envp[]) noexcept {
  return exec_keeping_sockets(envp, [&](char* const* env) { return PNO_REAL(execve)(path, argv, env); });
}

PNO_EXPORT int execv(const char* path, char* const argv[]) noexcept {
  return exec_keeping_sockets(nullptr, [&](char* const* env) { return PNO_REAL(execve)(path, argv, env); });
}

PNO_EXPORT int execvp(const char* file, char* const argv[]) noexcept {
  return exec_keeping_sockets(nullptr, [&](char* const* env) { return PNO_REAL(execvpe)(file, argv, env); });
}

PNO_EXPORT int execvpe(const char* file, char* const argv[], char* const envp[]) noexcept {
  return exec_keeping_sockets(envp, [&](char* const* env) { return PNO_REAL(execvpe)(file, argv, env); });
}

PNO_EXPORT int fexecve(int fd, char* const argv[], char* const envp[]) noexcept {
  return exec_keeping_sockets(envp, [&](char* const* env) { return PNO_REAL(fexecve)(fd, argv, env); });
}

// execl, execle, execlp: glibc's own call its internal execve, past the shim; these collect the
// arguments (on the stack, as glibc does) and take the execv* path above.
namespace {
template <typename Then>
int with_arg_list(const char* arg, va_list ap, bool want_envp, Then&& then) {
  std::size_t n = 0;  // arguments before the terminating null
  if (arg != nullptr) {
    va_list count;
    va_copy(count, ap);
    n = 1;
    while (va_arg(count, const char*) != nullptr) ++n;
    va_end(count);
  }
  auto** argv = static_cast<char**>(__builtin_alloca((n + 1) * sizeof(char*)));
  if (n > 0) argv[0] = const_cast<char*>(arg);
  for (std::size_t i = 1; i < n; ++i) argv[i] = va_arg(ap, char*);
  if (n > 0) (void)va_arg(ap, char*);  // the terminating null
  argv[n] = nullptr;
  char* const* envp = want_envp ? va_arg(ap, char* const*) : nullptr;
  return then(argv, envp);
}
}  // namespace

PNO_EXPORT int execl(const char* path, const char* arg, ...) {
  va_list ap;
  va_start(ap, arg);
  int r = with_arg_list(arg, ap, false, [&](char** argv, char* const*) { return execv(path, argv); });
  va_end(ap);
  return r;
}

PNO_EXPORT int execle(const char* path, const char* arg, ...) {
  va_list ap;
  va_start(ap, arg);
  int r = with_arg_list(arg, ap, true, [&](char** argv, char* const* envp) { return execve(path, argv, envp); });
  va_end(ap);
  return r;
}

PNO_EXPORT int execlp(const char* file, const char* arg, ...) {
  va_list ap;
  va_start(ap, arg);
  int r = with_arg_list(arg, ap, false, [&](char** argv, char* const*) { return execvp(file, argv); });
  va_end(ap);
  return r;
}

// glibc's fortified variants (_FORTIFY_SOURCE) check the buffer size, then do the plain call.
PNO_EXPORT void __chk_fail() __attribute__((noreturn));

PNO_EXPORT ssize_t __read_chk(int fd, void* buf, size_t n, size_t buflen) {
  if (n > buflen) __chk_fail();
  return read(fd, buf, n);
}

PNO_EXPORT ssize_t __recv_chk(int fd, void* buf, size_t n, size_t buflen, int flags) {
  if (n > buflen) __chk_fail();
  return recv(fd, buf, n, flags);
}

PNO_EXPORT ssize_t __recvfrom_chk(int fd, void* buf, size_t n, size_t buflen, int flags, sockaddr* addr,
                                  socklen_t* alen) {
  if (n > buflen) __chk_fail();
  return recvfrom(fd, buf, n, flags, addr, alen);
}
