// ARP cache for one interface (RFC 826, with the timing rules of RFC 1122 §2.3.2).
//
// Entries live in a fixed open-addressing table; packets waiting for resolution are copied into a
// pool of fixed-size buffers allocated once at construction, so nothing here allocates per packet.
//
// Entry life cycle:
//   incomplete --reply/request from it--> reachable --entry_ttl--> probing --reply--> reachable
//       |  (broadcast requests every retry_interval)          (still used; unicast requests)
//       +--max_retries unanswered: queued packets dropped, entry removed   (probing: entry removed)
#pragma once

#include <cstddef>
#include <cstdint>
#include <optional>
#include <vector>

#include "base/addr.hh"
#include "base/bytes.hh"
#include "stack/counters.hh"
#include "stack/frame_sink.hh"
#include "stack/config.hh"
#include "base/time.hh"

namespace pno::net {

/// What the cache needs from the interface to put frames on the wire.
class ArpSender {
 public:
  /// Sends an ARP request for `target`: broadcast, or unicast to `unicast_to` when re-verifying.
  virtual void arp_send_request(Ipv4Addr target, const MacAddr* unicast_to) = 0;
  /// Sends a queued IPv4 packet (header included) now that its next hop `dst` is known.
  virtual void arp_send_queued(const MacAddr& dst, ByteSpan packet, const TxMeta& meta) = 0;

 protected:
  ~ArpSender() = default;
};

class ArpCache {
 public:
  /// `max_packet_len`: largest IPv4 packet that can be queued (the MTU). Queued packets share two
  /// pools across all destinations (cfg.queue_small_packets buffers of kArpSmallPacket bytes,
  /// cfg.queue_large_packets of max_packet_len), so a burst of SYNs costs small buffers only.
  ArpCache(const ArpConfig& cfg, std::size_t max_packet_len, Counters& counters, ArpSender& sender);
  ArpCache(const ArpCache&) = delete;
  ArpCache& operator=(const ArpCache&) = delete;

  /// The MAC to use for next hop `ip`, if resolved. An entry older than entry_ttl is still used
  /// while it is re-verified with unicast requests (RFC 1122 §2.3.2.1), so traffic never stalls on
  /// a healthy neighbour.
  std::optional<MacAddr> lookup(Ipv4Addr ip, Instant now);

  /// Copies `packet` into the queue for `ip` and starts resolution (a broadcast request now) if it
  /// is not under way. Returns false when the packet was dropped: per-destination queue full, pool
  /// empty or table full of unresolved entries (counted as arp_queue_overflow).
  bool enqueue(Ipv4Addr ip, ByteSpan packet, const TxMeta& meta, Instant now);

  /// RFC 826 merge step: if `ip` has an entry, refresh it with `mac` (sending any queued packets,
  /// in order) and return true; otherwise change nothing and return false.
  bool update(Ipv4Addr ip, const MacAddr& mac, Instant now);

  /// Adds (or refreshes) the entry for `ip`: the ARP packet was addressed to us (RFC 826).
  void insert(Ipv4Addr ip, const MacAddr& mac, Instant now);

  /// Sends due retries; fails entries whose retries are exhausted.
  void poll(Instant now);
  /// Earliest retry or failure time (possibly earlier after an answer); kNever when nothing is
  /// being resolved.
  [[nodiscard]] Instant next_deadline() const;

  /// Entries in the table (any state).
  [[nodiscard]] std::size_t size() const { return live_; }
  /// Packets queued for `ip`.
  [[nodiscard]] std::size_t queued(Ipv4Addr ip) const;
  /// Packet buffers not in use.
  [[nodiscard]] std::size_t pool_free() const { return pool_free_count_; }

 private:
  enum class State : std::uint8_t { empty, incomplete, reachable, probing };
  static constexpr std::uint32_t kNil = 0xffffffffu;

  struct Entry {
    Ipv4Addr ip;
    MacAddr mac;
    State state = State::empty;
    std::uint8_t requests_sent = 0;
    Instant expires{};     ///< reachable: re-verify after this
    Instant next_retry{};  ///< incomplete/probing: next request, or failure once all are sent
    std::uint32_t q_head = kNil, q_tail = kNil;
    std::uint32_t q_len = 0;
  };

  struct PoolSlot {
    std::uint32_t next = kNil;
    std::uint32_t len = 0;
    std::size_t offset = 0;  ///< into pool_data_
    TxMeta meta;
  };

  [[nodiscard]] std::size_t home(Ipv4Addr ip) const;
  [[nodiscard]] std::size_t find(Ipv4Addr ip) const;  ///< slot index or table size
  Entry* find_entry(Ipv4Addr ip);
  /// A fresh slot for `ip` (evicting the stalest resolved entry if full); nullptr if impossible.
  Entry* allocate(Ipv4Addr ip);
  void remove(std::size_t slot);
  void make_reachable(Entry& e, const MacAddr& mac, Instant now);
  void drop_queue(Entry& e, Counter reason);
  void set_resolving(bool on);
  /// Takes a free buffer that holds `len` bytes (small first), or kNil.
  std::uint32_t pool_take(std::size_t len);
  void pool_put(std::uint32_t slot);

  ArpConfig cfg_;
  std::size_t max_packet_len_;
  Counters& counters_;
  ArpSender& sender_;

  std::vector<Entry> table_;  ///< power-of-two size, at least twice max_entries
  std::size_t mask_ = 0;
  std::size_t live_ = 0;
  std::size_t resolving_ = 0;  ///< incomplete + probing entries
  /// Lower bound on the earliest next_retry (exact after poll()): an answered or removed entry may
  /// leave it early, which costs one scan in poll() and never a missed retry. Keeps poll() and
  /// next_deadline() O(1) between retries.
  Instant earliest_retry_ = kNever;

  std::vector<std::byte> pool_data_;
  std::vector<PoolSlot> pool_;
  std::size_t small_slots_ = 0;           ///< slots [0, small_slots_) are small, the rest large
  std::uint32_t small_free_head_ = kNil;
  std::uint32_t large_free_head_ = kNil;
  std::size_t pool_free_count_ = 0;
};

}  // namespace pno::net
