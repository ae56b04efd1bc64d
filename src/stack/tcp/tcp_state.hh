// Connection states (RFC 9293 §3.3.2). Values equal Linux's TCP_* state numbers, so TcpInfo::state
// reads like the kernel's tcpi_state.
#pragma once

#include <cstdint>
#include <string_view>

namespace pno::tcp {

enum class TcpState : std::uint8_t {
  established = 1,
  syn_sent = 2,
  syn_received = 3,
  fin_wait_1 = 4,
  fin_wait_2 = 5,
  time_wait = 6,
  closed = 7,
  close_wait = 8,
  last_ack = 9,
  listen = 10,
  closing = 11,
};

/// RFC spelling ("SYN-SENT").
constexpr std::string_view to_string(TcpState s) {
  switch (s) {
    case TcpState::established: return "ESTABLISHED";
    case TcpState::syn_sent: return "SYN-SENT";
    case TcpState::syn_received: return "SYN-RECEIVED";
    case TcpState::fin_wait_1: return "FIN-WAIT-1";
    case TcpState::fin_wait_2: return "FIN-WAIT-2";
    case TcpState::time_wait: return "TIME-WAIT";
    case TcpState::closed: return "CLOSED";
    case TcpState::close_wait: return "CLOSE-WAIT";
    case TcpState::last_ack: return "LAST-ACK";
    case TcpState::listen: return "LISTEN";
    case TcpState::closing: return "CLOSING";
  }
  return "?";
}

/// RFC 9293 §3.3.2: the states after the handshake completed.
constexpr bool is_synchronized(TcpState s) {
  return s != TcpState::closed && s != TcpState::listen && s != TcpState::syn_sent && s != TcpState::syn_received;
}

}  // namespace pno::tcp
