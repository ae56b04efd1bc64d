// SO_LINGER with a timeout: a close() whose completion waits for the FIN to be acknowledged.
#include <algorithm>

#include "engine/host/impl.hh"
#include "stack/tcp/tcp_layer.hh"
#include "stack/tcp/tcp_state.hh"

namespace pno::engine {

using namespace host;

namespace {

bool fin_acked(const TcpInfo& ti) {
  // TcpState values past FIN-WAIT-1 whose FIN was acknowledged: FIN-WAIT-2, TIME-WAIT, CLOSED.
  using tcp::TcpState;
  const auto st = static_cast<TcpState>(ti.state);
  return st == TcpState::fin_wait_2 || st == TcpState::time_wait || st == TcpState::closed;
}

}  // namespace

/// SO_LINGER with a timeout: close() returns once everything sent is acknowledged (our FIN
/// included) or the timeout passed, as Linux's blocking close does; the connection then goes on
/// closing in the background. Polled from on_tick while pending.
bool HostService::Impl::linger_done(Family& f, std::uint32_t i, EngSock& s) {
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

void HostService::Impl::mark_lingering(Family& f, std::uint32_t i) {
  if (std::find(lingering.begin(), lingering.end(), std::pair{f.id, i}) == lingering.end()) {
    lingering.emplace_back(f.id, i);
  }
}

void HostService::Impl::finish_linger(Family& f, EngSock& s) {
  if (!s.linger_wait) return;
  s.linger_wait = false;
  if (s.linger_tag == c::kNoReply) return;
  c::Completion cp;
  cp.tag = s.linger_tag;
  cp.op = c::Op::close;
  if (f.cpl.push(std::span(&cp, 1)) == 0) f.backlog.push_back(cp);
  f.progress = true;
}

/// Every socket still in a blocking close gets pumped again (its FIN may be acknowledged by now).
void HostService::Impl::recheck_lingering() {
  if (lingering.empty()) return;
  auto waiting = std::move(lingering);
  lingering.clear();
  for (auto [fid, i] : waiting) {
    if (Family* f = family(fid); f != nullptr && i < f->socks.size() && f->socks[i].linger_wait) mark_dirty(*f, i);
  }
}

}  // namespace pno::engine
