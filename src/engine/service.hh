// The interface of a service inside the engine's loop: it runs on the stack's native socket API
// (tcp::TcpLayer) and is driven by the TCP layer's readiness events.
#pragma once

#include "base/errc.hh"
#include "base/socket.hh"
#include "base/time.hh"

namespace pno::tcp {
class TcpLayer;
}

namespace pno::engine {

class Service {
 public:
  virtual ~Service() = default;
  /// Opens listeners or starts connections. An error stops the engine before it is ready.
  virtual Errc start(tcp::TcpLayer& tcp, Instant now) = 0;
  /// Handles a readiness event; false when the socket is not this service's.
  virtual bool on_event(tcp::TcpLayer& tcp, const SocketEvent& ev, Instant now) = 0;
  /// Time-driven work (timeouts); called once per loop iteration.
  virtual void on_tick(tcp::TcpLayer& /*tcp*/, Instant /*now*/) {}
  /// True when the service finished its job and the engine may exit (clients only).
  [[nodiscard]] virtual bool done() const { return false; }
  /// Prints a summary at exit; returns the exit code the service asks for (0 = success).
  virtual int finish(tcp::TcpLayer& /*tcp*/, Instant /*now*/) { return 0; }
  [[nodiscard]] virtual const char* name() const = 0;
};

}  // namespace pno::engine
