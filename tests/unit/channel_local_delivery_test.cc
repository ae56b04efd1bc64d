// Local delivery in the stack: a connection from the stack's own address to itself (two apps on
// one engine) is carried in memory by Stack::poll and never reaches the wire.
#include <gtest/gtest.h>

#include <vector>

#include "stack/stack.hh"
#include "stack/tcp/tcp_layer.hh"

using namespace pno;

namespace {

struct CountingSink final : FrameSink {
  MutByteSpan tx_begin(std::size_t max_len) override {
    buf.resize(max_len);
    return buf;
  }
  void tx_commit(std::size_t, const TxMeta&) override { ++frames; }
  void tx_abort() override {}
  std::vector<std::byte> buf;
  std::size_t frames = 0;
};

}  // namespace

TEST(ChannelLocalDelivery, ConnectionToOwnAddressCarriesDataBothWaysWithoutFrames) {
  CountingSink sink;
  StackConfig cfg;
  cfg.mac = MacAddr{{2, 0, 0, 0, 0, 1}};
  cfg.addr = Ipv4Cidr{Ipv4Addr::from_octets(198, 18, 0, 1), 24};
  Instant now = instant_from_ns(1'000'000'000);
  Stack st(cfg, sink, now);
  auto& tcp = st.tcp();
  const SocketId l = *tcp.socket();
  ASSERT_EQ(tcp.bind(l, {Ipv4Addr::any(), 8080}), Errc::ok);
  ASSERT_EQ(tcp.listen(l, 16), Errc::ok);
  const SocketId cl = *tcp.socket();
  EXPECT_EQ(tcp.connect(cl, {cfg.addr.addr, 8080}), Errc::in_progress);
  SocketId sv = kInvalidSocket;
  for (int i = 0; i < 20 && sv == kInvalidSocket; ++i) {
    now += std::chrono::microseconds(10);
    st.poll(now);
    if (auto a = tcp.accept(l); a) sv = *a;
  }
  ASSERT_NE(sv, kInvalidSocket);
  EXPECT_NE(tcp.readiness(cl) & kWritable, 0u);
  std::vector<std::byte> msg(100'000);
  for (std::size_t i = 0; i < msg.size(); ++i) msg[i] = static_cast<std::byte>(i * 7);
  std::size_t sent = 0, got = 0;
  std::vector<std::byte> in(msg.size());
  for (int i = 0; i < 2000 && got < msg.size(); ++i) {
    if (sent < msg.size()) {
      if (auto n = tcp.send(cl, std::span(msg).subspan(sent)); n) sent += *n;
    }
    now += std::chrono::microseconds(10);
    st.poll(now);
    if (auto n = tcp.recv(sv, std::span(in).subspan(got)); n) got += *n;
  }
  ASSERT_EQ(got, msg.size());
  EXPECT_EQ(in, msg);
  // And back.
  const char reply[] = "pong";
  ASSERT_TRUE(tcp.send(sv, as_bytes(std::span(reply))));
  now += std::chrono::microseconds(10);
  st.poll(now);
  std::byte r[8];
  auto n = tcp.recv(cl, r);
  ASSERT_TRUE(n);
  EXPECT_EQ(*n, sizeof(reply));
  auto peer = tcp.peer_endpoint(sv);
  ASSERT_TRUE(peer);
  EXPECT_EQ((*peer).addr, cfg.addr.addr);
  EXPECT_EQ(sink.frames, 0u);  // nothing went to the wire (no ARP for ourselves either)
}

TEST(ChannelLocalDelivery, ConnectToOwnAddressWithoutListenerIsRefused) {
  CountingSink sink;
  StackConfig cfg;
  cfg.mac = MacAddr{{2, 0, 0, 0, 0, 1}};
  cfg.addr = Ipv4Cidr{Ipv4Addr::from_octets(198, 18, 0, 1), 24};
  Instant now = instant_from_ns(1'000'000'000);
  Stack st(cfg, sink, now);
  auto& tcp = st.tcp();
  const SocketId cl = *tcp.socket();
  EXPECT_EQ(tcp.connect(cl, {cfg.addr.addr, 9999}), Errc::in_progress);
  for (int i = 0; i < 5; ++i) {
    now += std::chrono::microseconds(10);
    st.poll(now);
  }
  EXPECT_NE(tcp.readiness(cl) & kError, 0u);
  EXPECT_EQ(tcp.take_error(cl), Errc::conn_refused);  // RST answered the SYN, in memory
  EXPECT_EQ(sink.frames, 0u);
}
