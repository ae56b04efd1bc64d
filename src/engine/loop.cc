#include "engine/loop.hh"

#include <poll.h>
#include <sched.h>

#include <algorithm>
#include <array>

#include <cerrno>
#include <ctime>

#include "stack/tcp/tcp_layer.hh"

namespace pno::engine {

Loop::Loop(const LoopConfig& cfg, Port& port, Stack& stack, Services& services, const TscClock& clock,
           EngineCounters& counters, SignalFlags& signals, StatsFn stats)
    : cfg_(cfg),
      port_(port),
      stack_(stack),
      services_(services),
      clock_(clock),
      counters_(counters),
      signals_(signals),
      stats_(std::move(stats)) {}

void Loop::on_frame(ByteSpan frame, const RxMeta& meta) { stack_.on_frame(frame, now_, meta); }

bool Loop::run_once(Instant now) {
  now_ = now;
  counters_.inc(EngineCounter::loop_iterations);
  port_.set_now(now);
  // Take every frame already waiting (bounded) before the stack's timers run: after the engine was
  // descheduled, the ACKs behind the first burst would otherwise reach the stack only after its
  // probe and retransmission timers fired on data they acknowledge.
  std::size_t rx = 0;
  for (unsigned i = 0; i < cfg_.rx_bursts_per_iteration; ++i) {
    const std::size_t n = port_.poll_rx(now, *this);
    rx += n;
    if (n < Port::kBurst) break;
  }
  auto& tcp = stack_.tcp();
  std::size_t events = services_.dispatch(tcp, now);
  services_.tick(tcp, now);
  next_deadline_ = stack_.poll(now);
  // Socket calls made while handling events are sent by the next poll(): do it now, not after a sleep.
  if (const std::size_t more = services_.dispatch(tcp, now); more > 0) {
    events += more;
    next_deadline_ = stack_.poll(now);
  }
  const std::size_t tx = port_.flush(now);
  return rx > 0 || tx > 0 || events > 0;
}

void Loop::idle_wait(Instant now) {
  if (wake_ != nullptr && wake_->take_busy()) {
    // The host service moved bytes or commands: not idle.
    idle_iters_ = 0;
    idle_since_ = kNever;
    sleep_ = Duration{0};
    return;
  }
  if (cfg_.busy_poll) return;
  counters_.inc(EngineCounter::loop_idle_iterations);
  if (idle_since_ == kNever) idle_since_ = now;
  if (++idle_iters_ < cfg_.spin_iterations && now - idle_since_ < cfg_.spin_time) {
    // Spinning catches the next frame or host command within a loop iteration, but the core may be
    // shared (with the client of a benchmark, or any task): give it away to whoever is runnable
    // there; with nobody else runnable the yield returns at once.
    if (cfg_.yield_when_spinning) {
      counters_.inc(EngineCounter::loop_yields);
      sched_yield();
    }
    return;
  }
  const std::vector<int>& rx_fds = port_.rx_wait_fds();
  Instant wake = now;
  if (!rx_fds.empty()) {
    // A frame makes an rx fd readable and a host rings its doorbell: only timers need a timeout.
    wake = now + cfg_.max_sleep_rx_wake;
  } else {
    // Frames do not wake us: progressive back-off, each empty wake-up doubles the sleep.
    sleep_ = sleep_.count() == 0 ? cfg_.min_sleep : std::min(sleep_ * 2, cfg_.max_sleep);
    wake = now + sleep_;
  }
  wake = std::min({wake, next_deadline_, port_.next_timer()});
  if (wake <= now) return;
  const auto ns = (wake - now).count();
  timespec ts{static_cast<time_t>(ns / 1'000'000'000), static_cast<long>(ns % 1'000'000'000)};
  std::array<pollfd, 1 + kMaxRxWaitFds> fds{};
  nfds_t n = 0;
  if (wake_ != nullptr) {
    // Tell attached hosts we sleep (they ring the doorbell after producing), re-check, then wait on
    // the doorbells and sockets with the same timeout.
    if (!wake_->prepare_sleep()) {
      idle_iters_ = 0;
      idle_since_ = kNever;
      sleep_ = Duration{0};
      return;
    }
    fds[n++] = pollfd{wake_->wait_fd(), POLLIN, 0};
  }
  const nfds_t first_rx = n;
  for (std::size_t i = 0; i < rx_fds.size() && i < kMaxRxWaitFds; ++i) fds[n++] = pollfd{rx_fds[i], POLLIN, 0};
  counters_.inc(EngineCounter::loop_sleeps);
  if (n == 0) {
    nanosleep(&ts, nullptr);  // EINTR (a signal) just ends the sleep early
    return;
  }
  const int r = ppoll(fds.data(), n, &ts, nullptr);  // EINTR (a signal) just ends the sleep early
  bool rx_ready = false;
  for (nfds_t i = first_rx; r > 0 && i < n; ++i) rx_ready = rx_ready || (fds[i].revents & POLLIN) != 0;
  if (rx_ready) counters_.inc(EngineCounter::loop_rx_wakeups);
  if (wake_ != nullptr) wake_->woke(r > 0 && (fds[0].revents & POLLIN) != 0);
}

void Loop::run() {
  Instant next_stats = cfg_.stats_interval.count() > 0 ? clock_.now() + cfg_.stats_interval : kNever;
  Instant linger_until = kNever;
  while (signals_.stop == 0) {
    const Instant now = clock_.now();
    if (run_once(now)) {
      idle_iters_ = 0;
      idle_since_ = kNever;
      sleep_ = Duration{0};
    } else {
      idle_wait(now);
    }
    if (signals_.dump_stats != 0) {
      signals_.dump_stats = 0;
      stats_("signal");
    }
    if (now >= next_stats) {
      stats_("interval");
      next_stats = now + cfg_.stats_interval;
    }
    if (linger_until == kNever && services_.all_clients_done()) linger_until = now + cfg_.client_linger;
    if (now >= linger_until) break;
  }
}

}  // namespace pno::engine
