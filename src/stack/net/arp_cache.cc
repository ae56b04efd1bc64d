#include "stack/net/arp_cache.hh"

#include <algorithm>
#include <bit>
#include <cstring>

namespace pno::net {

ArpCache::ArpCache(const ArpConfig& cfg, std::size_t max_packet_len, Counters& counters, ArpSender& sender)
    : cfg_(cfg), max_packet_len_(max_packet_len), counters_(counters), sender_(sender) {
  // Load factor <= 1/2 keeps linear-probing chains short.
  const std::size_t cap = std::bit_ceil(std::max<std::size_t>(16, 2 * std::max<std::size_t>(1, cfg_.max_entries)));
  table_.resize(cap);
  mask_ = cap - 1;
  // Small buffers only help if they are smaller than a full one.
  const std::size_t small_len = std::min(kArpSmallPacket, max_packet_len_);
  small_slots_ = cfg_.queue_small_packets;
  const std::size_t n = small_slots_ + cfg_.queue_large_packets;
  pool_.resize(n);
  pool_data_.resize(small_slots_ * small_len + cfg_.queue_large_packets * max_packet_len_);
  std::size_t off = 0;
  for (std::size_t i = 0; i < n; ++i) {
    pool_[i].offset = off;
    off += i < small_slots_ ? small_len : max_packet_len_;
  }
  for (std::size_t i = n; i-- > 0;) pool_put(static_cast<std::uint32_t>(i));
}

std::uint32_t ArpCache::pool_take(std::size_t len) {
  std::uint32_t* head = nullptr;
  if (len <= std::min(kArpSmallPacket, max_packet_len_) && small_free_head_ != kNil) {
    head = &small_free_head_;
  } else if (len <= max_packet_len_ && large_free_head_ != kNil) {
    head = &large_free_head_;
  } else {
    return kNil;
  }
  const std::uint32_t s = *head;
  *head = pool_[s].next;
  pool_[s].next = kNil;
  --pool_free_count_;
  return s;
}

void ArpCache::pool_put(std::uint32_t s) {
  std::uint32_t& head = s < small_slots_ ? small_free_head_ : large_free_head_;
  pool_[s].next = head;
  head = s;
  ++pool_free_count_;
}

std::size_t ArpCache::home(Ipv4Addr ip) const {
  // Fibonacci hashing: neighbours on one subnet differ in the low bits, which this spreads.
  return static_cast<std::size_t>((ip.v * 0x9e3779b1u) >> 7) & mask_;
}

std::size_t ArpCache::find(Ipv4Addr ip) const {
  for (std::size_t i = home(ip), n = 0; n < table_.size(); i = (i + 1) & mask_, ++n) {
    const Entry& e = table_[i];
    if (e.state == State::empty) break;
    if (e.ip == ip) return i;
  }
  return table_.size();
}

ArpCache::Entry* ArpCache::find_entry(Ipv4Addr ip) {
  const std::size_t i = find(ip);
  return i < table_.size() ? &table_[i] : nullptr;
}

ArpCache::Entry* ArpCache::allocate(Ipv4Addr ip) {
  if (live_ >= cfg_.max_entries) {
    // Evict the resolved entry closest to (or furthest past) its expiry. Unresolved entries hold
    // queued packets and are never evicted: they fail on their own after max_retries.
    std::size_t victim = table_.size();
    for (std::size_t i = 0; i < table_.size(); ++i) {
      const Entry& e = table_[i];
      if (e.state != State::reachable && e.state != State::probing) continue;
      if (victim == table_.size() || e.expires < table_[victim].expires) victim = i;
    }
    if (victim == table_.size()) return nullptr;
    remove(victim);
  }
  std::size_t i = home(ip);
  while (table_[i].state != State::empty) i = (i + 1) & mask_;
  table_[i] = Entry{};
  table_[i].ip = ip;
  ++live_;
  return &table_[i];
}

void ArpCache::remove(std::size_t slot) {
  Entry& gone = table_[slot];
  if (gone.state == State::incomplete || gone.state == State::probing) set_resolving(false);
  drop_queue(gone, Counter::arp_resolve_failed);
  gone.state = State::empty;
  --live_;
  // Backward-shift deletion: pull later members of the probe chain into the hole so find() never
  // stops early at it.
  std::size_t hole = slot;
  for (std::size_t j = (slot + 1) & mask_; table_[j].state != State::empty; j = (j + 1) & mask_) {
    const std::size_t h = home(table_[j].ip);
    // Move j into the hole unless its home lies cyclically in (hole, j].
    const bool home_between = hole <= j ? (h > hole && h <= j) : (h > hole || h <= j);
    if (home_between) continue;
    table_[hole] = table_[j];
    table_[j].state = State::empty;
    hole = j;
  }
}

void ArpCache::set_resolving(bool on) {
  if (on) {
    ++resolving_;
  } else {
    --resolving_;
  }
}

std::optional<MacAddr> ArpCache::lookup(Ipv4Addr ip, Instant now) {
  Entry* e = find_entry(ip);
  if (e == nullptr) return std::nullopt;
  switch (e->state) {
    case State::reachable:
      if (now >= e->expires) {
        // Stale: keep sending to the known MAC while asking it to confirm (RFC 1122 §2.3.2.1).
        e->state = State::probing;
        set_resolving(true);
        e->requests_sent = 1;
        e->next_retry = now + cfg_.retry_interval;
        earliest_retry_ = std::min(earliest_retry_, e->next_retry);
        counters_.inc(Counter::arp_tx_request);
        sender_.arp_send_request(ip, &e->mac);
      }
      return e->mac;
    case State::probing:
      return e->mac;
    case State::incomplete:
    case State::empty:
      break;
  }
  return std::nullopt;
}

bool ArpCache::enqueue(Ipv4Addr ip, ByteSpan packet, const TxMeta& meta, Instant now) {
  Entry* e = find_entry(ip);
  bool fresh = false;
  if (e == nullptr) {
    e = allocate(ip);
    if (e == nullptr) {
      counters_.inc(Counter::arp_queue_overflow);
      return false;
    }
    e->state = State::incomplete;
    set_resolving(true);
    fresh = true;
  }
  bool queued = false;
  const std::uint32_t s = e->state == State::incomplete && e->q_len < cfg_.max_queued_per_dest
                              ? pool_take(packet.size())
                              : kNil;
  if (s != kNil) {
    pool_[s].len = static_cast<std::uint32_t>(packet.size());
    pool_[s].meta = meta;
    std::memcpy(pool_data_.data() + pool_[s].offset, packet.data(), packet.size());
    if (e->q_tail == kNil) {
      e->q_head = s;
    } else {
      pool_[e->q_tail].next = s;
    }
    e->q_tail = s;
    ++e->q_len;
    queued = true;
  } else {
    counters_.inc(Counter::arp_queue_overflow);
  }
  if (fresh) {
    // First request now; retries come from poll() (RFC 1122 §2.3.2.1: at most one per second).
    e->requests_sent = 1;
    e->next_retry = now + cfg_.retry_interval;
    earliest_retry_ = std::min(earliest_retry_, e->next_retry);
    counters_.inc(Counter::arp_tx_request);
    sender_.arp_send_request(ip, nullptr);
  }
  return queued;
}

void ArpCache::make_reachable(Entry& e, const MacAddr& mac, Instant now) {
  if (e.state == State::incomplete || e.state == State::probing) set_resolving(false);
  e.state = State::reachable;
  e.mac = mac;
  e.requests_sent = 0;
  e.expires = now + cfg_.entry_ttl;
  // Send what waited, oldest first, so TCP sees no reordering from ARP.
  while (e.q_head != kNil) {
    const std::uint32_t s = e.q_head;
    e.q_head = pool_[s].next;
    sender_.arp_send_queued(mac, ByteSpan(pool_data_.data() + pool_[s].offset, pool_[s].len), pool_[s].meta);
    pool_put(s);
  }
  e.q_tail = kNil;
  e.q_len = 0;
}

void ArpCache::drop_queue(Entry& e, Counter reason) {
  while (e.q_head != kNil) {
    const std::uint32_t s = e.q_head;
    e.q_head = pool_[s].next;
    pool_put(s);
    counters_.inc(reason);
  }
  e.q_tail = kNil;
  e.q_len = 0;
}

bool ArpCache::update(Ipv4Addr ip, const MacAddr& mac, Instant now) {
  Entry* e = find_entry(ip);
  if (e == nullptr) return false;
  make_reachable(*e, mac, now);
  return true;
}

void ArpCache::insert(Ipv4Addr ip, const MacAddr& mac, Instant now) {
  Entry* e = find_entry(ip);
  if (e == nullptr) e = allocate(ip);
  if (e == nullptr) return;  // table full of unresolved entries: learning is optional
  make_reachable(*e, mac, now);
}

void ArpCache::poll(Instant now) {
  // earliest_retry_ is never later than the true earliest retry, so nothing due is skipped.
  if (resolving_ == 0 || now < earliest_retry_) return;
  Instant earliest = kNever;
  for (std::size_t i = 0; i < table_.size();) {
    Entry& e = table_[i];
    if (e.state != State::incomplete && e.state != State::probing) {
      ++i;
      continue;
    }
    if (e.next_retry > now) {
      earliest = std::min(earliest, e.next_retry);
      ++i;
      continue;
    }
    if (e.requests_sent > cfg_.max_retries) {
      // The last request went unanswered for a whole interval: give up (RFC 1122 §2.3.2.1).
      // remove() may shift a later entry into slot i, so look at i again.
      remove(i);
      continue;
    }
    ++e.requests_sent;
    e.next_retry = now + cfg_.retry_interval;
    earliest = std::min(earliest, e.next_retry);
    counters_.inc(Counter::arp_tx_request);
    sender_.arp_send_request(e.ip, e.state == State::probing ? &e.mac : nullptr);
    ++i;
  }
  earliest_retry_ = earliest;
}

Instant ArpCache::next_deadline() const { return resolving_ == 0 ? kNever : earliest_retry_; }

std::size_t ArpCache::queued(Ipv4Addr ip) const {
  const std::size_t i = find(ip);
  return i < table_.size() ? table_[i].q_len : 0;
}

}  // namespace pno::net
