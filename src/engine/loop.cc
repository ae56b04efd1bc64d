#include "engine/loop.hh"

#include <algorithm>
#include <poll.h>

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
  const std::size_t rx = port_.poll_rx(now, *this);
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
    sleep_ = Duration{0};
    return;
  }
  if (cfg_.busy_poll) return;
  if (++idle_iters_ < cfg_.spin_iterations) return;
  // Progressive back-off: each empty wake-up doubles the sleep, up to max_sleep.
  sleep_ = sleep_.count() == 0 ? cfg_.min_sleep : std::min(sleep_ * 2, cfg_.max_sleep);
  Instant wake = now + sleep_;
  wake = std::min({wake, next_deadline_, port_.next_timer()});
  if (wake <= now) return;
  const auto ns = (wake - now).count();
  timespec ts{static_cast<time_t>(ns / 1'000'000'000), static_cast<long>(ns % 1'000'000'000)};
  counters_.inc(EngineCounter::loop_sleeps);
  if (wake_ != nullptr) {
    // Tell attached hosts we sleep (they ring the doorbell after producing), re-check, then wait on
    // the doorbells and sockets with the same timeout.
    if (!wake_->prepare_sleep()) {
      idle_iters_ = 0;
      sleep_ = Duration{0};
      return;
    }
    pollfd p{wake_->wait_fd(), POLLIN, 0};
    const int r = ppoll(&p, 1, &ts, nullptr);  // EINTR (a signal) just ends the sleep early
    wake_->woke(r > 0 && (p.revents & POLLIN) != 0);
    return;
  }
  nanosleep(&ts, nullptr);  // EINTR (a signal) just ends the sleep early
}

void Loop::run() {
  Instant next_stats = cfg_.stats_interval.count() > 0 ? clock_.now() + cfg_.stats_interval : kNever;
  Instant linger_until = kNever;
  while (signals_.stop == 0) {
    const Instant now = clock_.now();
    if (run_once(now)) {
      idle_iters_ = 0;
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
