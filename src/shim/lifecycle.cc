// The process-wide state and its life: the descriptor tables (mapped at load), the lazy attach to
// the engine, fork (the child's references counted before it exists) and exit (this process's
// references closed).
#include <pthread.h>
#include <sched.h>
#include <sys/resource.h>
#include <sys/stat.h>
#include <sys/un.h>

#include <algorithm>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <span>

#include "shim/internal.hh"
#include "shim/log.hh"

namespace pno::shim {

std::atomic<State*> g_state{nullptr};
thread_local bool t_in_channel __attribute__((tls_model("initial-exec"))) = false;

namespace {

// The state lives in static storage and is never destroyed: application threads may still call
// in while static destructors run.
alignas(State) unsigned char g_state_storage[sizeof(State)];

const char* env_or(const char* name, const char* fallback) {
  const char* v = std::getenv(name);
  return (v != nullptr && *v != '\0') ? v : fallback;
}

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

void at_exit_handler() { release_all_refs(); }

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
  std::size_t n = install_channel(st, std::move(ch));
  if (log_enabled(LogLevel::info)) {
    log(LogLevel::info, "attached to engine at %s (%u addresses)", g_engine_path, static_cast<unsigned>(n));
  }
  return true;
}

}  // namespace

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

std::size_t install_channel(State* st, std::unique_ptr<HostChannel> ch) {
  const channel::EngineInfo& info = ch->engine();
  std::size_t n = std::min<std::size_t>(info.n_addrs, std::size(st->addr_copy));
  for (std::size_t i = 0; i < n; ++i) st->addr_copy[i] = info.addrs[i];
  st->addrs = EngineAddrs{st->addr_copy, n};
  st->ch = ch.get();
  st->channel = std::move(ch);
  return n;
}

void publish_state(State* st, bool attached) {
  if (attached) g_attach.store(kAttached, std::memory_order_release);
  ::pthread_atfork(on_fork_prepare, nullptr, on_fork_child);
  std::atexit(at_exit_handler);
  g_state.store(st, std::memory_order_release);
}

const char* configure_from_env() {
  set_log_level(parse_log_level(std::getenv("PNO_LOG_LEVEL"), LogLevel::warn));
  const char* path = env_or("PNO_ENGINE_SOCKET", "/run/pno/engine.sock");
  const char* req = std::getenv("PNO_REQUIRE_ENGINE");
  g_require = req != nullptr && std::strcmp(req, "1") == 0;
  g_warned = std::getenv("PNO_ENGINE_WARNED") != nullptr;
  if (const char* off = std::getenv("PNO_DISABLE"); off != nullptr && std::strcmp(off, "1") == 0) {
    log(LogLevel::info, "PNO_DISABLE=1: every socket stays with the kernel");
    return nullptr;
  }
  std::snprintf(g_engine_path, sizeof g_engine_path, "%s", path);
  return path;
}

void start_unattached(const char* path) {
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
  publish_state(st, false);
}

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

}  // namespace pno::shim
