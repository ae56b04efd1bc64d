// Two TcpLayers joined by a simulated link with delay, loss, reordering and duplication, driven
// by one virtual clock. For end-to-end tests of the protocol against itself (bulk transfer under
// loss, many connections), complementing the scripted single-side tests of tcp_harness.hh.
#pragma once

#include <cstdint>
#include <functional>
#include <memory>
#include <random>
#include <vector>

#include "stack/config.hh"
#include "stack/counters.hh"
#include "stack/ip_output.hh"
#include "stack/tcp/tcp_layer.hh"
#include "support/frames.hh"

namespace pno::test {

struct LinkConfig {
  Duration delay = std::chrono::milliseconds(5);  ///< one way
  double loss = 0.0;        ///< probability a packet is dropped
  double duplicate = 0.0;   ///< probability a packet is delivered twice
  double reorder = 0.0;     ///< probability a packet gets `reorder_delay` extra delay
  Duration reorder_delay = std::chrono::milliseconds(3);
  std::uint32_t seed = 1;
};

class TcpPair {
 public:
  class Side : public Ipv4Output {
   public:
    Side(TcpPair& pair, Ipv4Addr addr, int index) : pair_(pair), addr_(addr), index_(index) {}
    MutByteSpan ip_begin(Ipv4Addr dst, std::uint8_t proto, std::size_t l4_len) override;
    void ip_commit(bool offload) override;
    void ip_abort() override { open_ = false; }
    [[nodiscard]] Ipv4Addr local_addr() const override { return addr_; }
    [[nodiscard]] std::size_t max_l4_len() const override { return 1480; }
    [[nodiscard]] bool tcp_checksum_offload() const override { return false; }

    Counters counters;
    std::unique_ptr<tcp::TcpLayer> tcp;

   private:
    TcpPair& pair_;
    Ipv4Addr addr_;
    int index_;
    Bytes buf_;
    Ipv4Addr dst_{};
    bool open_ = false;
  };

  explicit TcpPair(const TcpConfig& cfg = TcpConfig{}, const LinkConfig& link = {});

  Side a;  ///< at kLocalIp
  Side b;  ///< at kPeerIp
  LinkConfig link;
  Instant now = instant_from_ns(1'000'000'000'000);
  std::uint64_t delivered = 0, dropped = 0;

  /// Runs the simulation until `done()` is true (checked after every step) or `limit` of virtual
  /// time passed; `each_step` runs after every poll (the applications). Returns done().
  bool run(const std::function<bool()>& done, Duration limit, const std::function<void()>& each_step = {});

 private:
  struct Packet {
    Instant at;
    int to;
    Ipv4Addr src, dst;
    Bytes bytes;
  };
  void transmit(int from, Ipv4Addr src, Ipv4Addr dst, Bytes bytes);
  std::vector<Packet> in_flight_;
  std::mt19937 rng_;
};

}  // namespace pno::test
