// Built-in test services on the stack's native socket API (tcp::TcpLayer): an echo server, a discard
// server and a bulk-transfer client. They run inside the engine's loop and are driven by the TCP
// layer's readiness events; none of them blocks or allocates per segment.
#pragma once

#include <nettle/sha2.h>

#include <array>
#include <cstdint>
#include <memory>
#include <span>
#include <optional>
#include <string>
#include <unordered_map>
#include <vector>

#include "engine/engine_counters.hh"
#include "engine/service.hh"
#include "base/addr.hh"
#include "base/errc.hh"
#include "base/socket.hh"
#include "base/time.hh"
#include "stack/config.hh"

namespace pno::engine {

/// All services of one stack; dispatches the TCP layer's events to their owners.
class Services {
 public:
  void add(std::unique_ptr<Service> s) { list_.push_back(std::move(s)); }
  Errc start(tcp::TcpLayer& tcp, Instant now, std::string& failed);
  /// Drains pending events; returns how many were handled.
  std::size_t dispatch(tcp::TcpLayer& tcp, Instant now);
  void tick(tcp::TcpLayer& tcp, Instant now);
  /// True when at least one service is a client and all clients are done.
  [[nodiscard]] bool all_clients_done() const;
  int finish(tcp::TcpLayer& tcp, Instant now);
  [[nodiscard]] bool empty() const { return list_.empty(); }
  void set_has_client(bool v) { has_client_ = v; }

 private:
  std::vector<std::unique_ptr<Service>> list_;
  bool has_client_ = false;
};

/// Byte stream servers: echo (RFC 862, port 7) and discard (RFC 863, port 9).
class StreamServer final : public Service {
 public:
  enum class Mode : std::uint8_t { echo, discard };
  /// `keepalive`: SO_KEEPALIVE on every accepted connection (timing from TcpConfig).
  StreamServer(Mode mode, std::uint16_t port, EngineCounters& counters, bool keepalive = false);
  Errc start(tcp::TcpLayer& tcp, Instant now) override;
  bool on_event(tcp::TcpLayer& tcp, const SocketEvent& ev, Instant now) override;
  [[nodiscard]] const char* name() const override { return mode_ == Mode::echo ? "echo" : "discard"; }
  [[nodiscard]] std::size_t connections() const { return conns_.size(); }

 private:
  struct Conn {
    std::vector<std::byte> pending;  ///< echo bytes the send buffer did not take yet
    std::size_t pending_off = 0;
    bool eof = false;                ///< peer sent FIN and everything before it was read
  };
  void accept_all(tcp::TcpLayer& tcp);
  /// Moves data until the socket would block; false when the connection is finished and closed.
  bool pump(tcp::TcpLayer& tcp, SocketId id, Conn& c);
  void close_conn(tcp::TcpLayer& tcp, SocketId id, bool error);

  Mode mode_;
  std::uint16_t port_;
  bool keepalive_;
  EngineCounters& counters_;
  SocketId listener_ = kInvalidSocket;
  std::unordered_map<SocketId, Conn> conns_;
  std::vector<std::byte> scratch_;
};

struct ClientConfig {
  Endpoint remote;
  std::uint32_t conns = 1;
  std::uint64_t send_bytes = 0;               ///< per connection
  std::optional<std::uint64_t> recv_bytes;    ///< per connection; unset: read until EOF
  std::uint64_t seed = 1;
  bool shutdown_after_send = true;            ///< half-close once everything was sent
  Duration timeout = std::chrono::seconds(600);
  bool per_conn_lines = false;                ///< one line per connection (always when conns <= 16)
  bool keepalive = false;                     ///< SO_KEEPALIVE on every connection
};

/// Connects `conns` times to `remote`, sends `send_bytes` pseudo-random bytes on each (stream i is
/// generated from seed+i), reads what comes back, and prints SHA-256 digests of both directions.
class BulkClient final : public Service {
 public:
  BulkClient(const ClientConfig& cfg, EngineCounters& counters);
  Errc start(tcp::TcpLayer& tcp, Instant now) override;
  bool on_event(tcp::TcpLayer& tcp, const SocketEvent& ev, Instant now) override;
  void on_tick(tcp::TcpLayer& tcp, Instant now) override;
  [[nodiscard]] bool done() const override { return finished_ == conns_.size(); }
  int finish(tcp::TcpLayer& tcp, Instant now) override;
  [[nodiscard]] const char* name() const override { return "client"; }

  /// The byte stream a connection sends: bytes [off, off+out.size()) of the stream for `seed`.
  static void generate(std::uint64_t seed, std::uint64_t off, std::span<std::byte> out);

 private:
  enum class State : std::uint8_t { connecting, open, ok, failed };
  struct Conn {
    SocketId id = kInvalidSocket;
    State state = State::connecting;
    std::uint64_t sent = 0, received = 0;
    bool shut_wr = false, eof = false;
    Endpoint local;
    Errc error = Errc::ok;
    std::string why;
    Instant t_start{}, t_end{};
    sha256_ctx sent_hash{}, recv_hash{};
    std::array<std::uint8_t, SHA256_DIGEST_SIZE> sent_digest{}, recv_digest{};
  };
  void open_next(tcp::TcpLayer& tcp, Instant now, std::size_t n);
  void pump(tcp::TcpLayer& tcp, Conn& c, Instant now);
  void complete(tcp::TcpLayer& tcp, Conn& c, Instant now, Errc err, std::string why);

  ClientConfig cfg_;
  EngineCounters& counters_;
  std::vector<Conn> conns_;
  std::unordered_map<SocketId, std::size_t> by_id_;
  std::size_t finished_ = 0;
  std::size_t started_ = 0;
  bool stopping_ = false;
  Instant t0_{};
  std::vector<std::byte> buf_;
};

std::string hex(std::span<const std::uint8_t> b);

}  // namespace pno::engine
