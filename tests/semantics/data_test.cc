// The data path: read, write, readv, writev, recv, recvfrom, recvmsg, recvmmsg, send, sendto,
// sendmsg, sendmmsg, sendfile; short reads and writes, EAGAIN, EOF, RST, SIGPIPE, and the flags
// MSG_PEEK, MSG_WAITALL, MSG_DONTWAIT, MSG_MORE, MSG_NOSIGNAL.
#include <fcntl.h>
#include <poll.h>
#include <sys/ioctl.h>
#include <sys/sendfile.h>
#include <sys/socket.h>
#include <sys/uio.h>
#include <unistd.h>

#include <cerrno>
#include <cstdio>
#include <cstring>
#include <thread>

#include <gtest/gtest.h>

#include "harness.hh"

namespace pno::semtest {
namespace {

TEST(Data, EchoRoundTripKeepsOrder) {
  Peer p, echo;
  Conn c = connect_to_peer(p);
  echo.post("echo " + id(c) + " 20000");
  auto data = pattern(1 << 20);
  std::thread writer([&] {
    write_all(c.fd, data.data(), data.size());
    ::shutdown(c.fd, SHUT_WR);
  });
  auto back = read_exact(c.fd, data.size(), 20000);
  writer.join();
  EXPECT_TRUE(back == data) << "echoed bytes differ";
  char b;
  EXPECT_EQ(::read(c.fd, &b, 1), 0) << "no EOF after the echo";
  EXPECT_EQ(echo.reply()[1], std::to_string(data.size()));
}

TEST(Data, BulkFromPeerArrivesInOrder) {
  Peer p, sender;
  Conn c = connect_to_peer(p);
  const std::size_t n = 4 << 20;
  sender.post("send " + id(c) + " " + std::to_string(n));
  auto got = read_exact(c.fd, n, 30000);
  EXPECT_TRUE(check_pattern(got, 0)) << "pattern mismatch";
  EXPECT_EQ(sender.reply()[0], "ok");
}

TEST(Data, BulkToPeerArrivesInOrder) {
  Peer p, drain;
  Conn c = connect_to_peer(p);
  drain.post("drain " + id(c) + " 30000");
  const std::size_t n = 4 << 20;
  std::vector<std::uint8_t> buf(100000);
  for (std::size_t off = 0; off < n;) {
    std::size_t k = std::min(buf.size(), n - off);
    fill_pattern({buf.data(), k}, off);
    ssize_t w = ::write(c.fd, buf.data(), k);
    ASSERT_GT(w, 0) << errname(errno);
    off += static_cast<std::size_t>(w);  // a blocking write may still be short; resume from there
  }
  ASSERT_EQ(::close(c.fd.release()), 0);
  auto r = drain.reply();
  ASSERT_GE(r.size(), 3u);
  EXPECT_EQ(r[1], std::to_string(n));
  EXPECT_EQ(r[2], "1");
}

TEST(Data, ZeroLengthReadAndWriteReturnZero) {
  Peer p;
  Conn c = connect_to_peer(p);
  char b;
  EXPECT_EQ(::write(c.fd, &b, 0), 0);
  EXPECT_EQ(::read(c.fd, &b, 0), 0);
  EXPECT_EQ(::send(c.fd, &b, 0, 0), 0);
}

TEST(Data, ShortReadReturnsWhatIsThere) {
  Peer p;
  Conn c = connect_to_peer(p);
  p.call("send " + id(c) + " 10");
  ASSERT_EQ(wait_readable_bytes(c.fd, 10), 10);
  std::uint8_t buf[1000];
  EXPECT_EQ(::read(c.fd, buf, sizeof buf), 10);
  EXPECT_TRUE(check_pattern({buf, 10}, 0));
}

TEST(Data, EmptyNonBlockingReadIsEAGAIN) {
  Peer p;
  Conn c = connect_to_peer(p, SOCK_NONBLOCK);
  char b[16];
  errno = 0;
  EXPECT_EQ(::read(c.fd, b, sizeof b), -1);
  EXPECT_EQ(errno, EAGAIN);
  errno = 0;
  EXPECT_EQ(::recv(c.fd, b, sizeof b, 0), -1);
  EXPECT_EQ(errno, EWOULDBLOCK);
}

TEST(Data, MsgDontwaitOnBlockingSocketIsEAGAINThenData) {
  Peer p;
  Conn c = connect_to_peer(p);
  char b[16];
  errno = 0;
  EXPECT_EQ(::recv(c.fd, b, sizeof b, MSG_DONTWAIT), -1);
  EXPECT_EQ(errno, EAGAIN);
  EXPECT_FALSE(::fcntl(c.fd, F_GETFL) & O_NONBLOCK) << "MSG_DONTWAIT changed the file flags";
  p.call("sendhex " + id(c) + " " + hex("hey"));
  ASSERT_EQ(wait_readable_bytes(c.fd, 3), 3);
  EXPECT_EQ(::recv(c.fd, b, sizeof b, MSG_DONTWAIT), 3);
}

TEST(Data, EofAfterFinIsZeroEveryTime) {
  Peer p;
  Conn c = connect_to_peer(p);
  p.call("sendhex " + id(c) + " " + hex("last"));
  p.call("shutwr " + id(c));
  auto got = read_exact(c.fd, 4);
  EXPECT_EQ(std::string(got.begin(), got.end()), "last");
  char b[8];
  EXPECT_EQ(::read(c.fd, b, sizeof b), 0);
  EXPECT_EQ(::read(c.fd, b, sizeof b), 0);
  EXPECT_EQ(::recv(c.fd, b, sizeof b, MSG_DONTWAIT), 0);
  // The write side is still open after the peer's FIN (half-close, RFC 9293 §3.6).
  ASSERT_EQ(::write(c.fd, "still", 5), 5);
  auto r = p.call("readhex " + id(c) + " 5 5000");
  EXPECT_EQ(r[1], hex("still"));
}

TEST(Data, BlockingReadWaitsForData) {
  Peer p, later;
  Conn c = connect_to_peer(p);
  later.post("sendchunks " + id(c) + " 2 1 200");
  auto t0 = std::chrono::steady_clock::now();
  char b[8];
  EXPECT_EQ(::read(c.fd, b, sizeof b), 1);
  EXPECT_EQ(::read(c.fd, b, sizeof b), 1);
  EXPECT_GE(ms_since(t0), 100) << "the second read did not wait for the second chunk";
  later.reply();
}

TEST(Data, PeerResetGivesECONNRESETOnceThenEof) {
  Peer p;
  Conn c = connect_to_peer(p);
  p.call("rst " + id(c));
  short ev = poll_one(c.fd, POLLIN, 5000);
  EXPECT_TRUE(ev & POLLIN) << ev;
  EXPECT_TRUE(ev & POLLERR) << ev;
  EXPECT_TRUE(ev & POLLHUP) << ev;
  char b[8];
  errno = 0;
  EXPECT_EQ(::read(c.fd, b, sizeof b), -1);
  EXPECT_EQ(errno, ECONNRESET);
  EXPECT_EQ(::read(c.fd, b, sizeof b), 0);
  errno = 0;
  EXPECT_EQ(::send(c.fd, "x", 1, MSG_NOSIGNAL), -1);
  EXPECT_EQ(errno, EPIPE);
}

TEST(Data, PeerResetIsReportedBySoError) {
  Peer p;
  Conn c = connect_to_peer(p);
  p.call("rst " + id(c));
  ASSERT_TRUE(poll_one(c.fd, POLLIN, 5000) & POLLERR);
  int err = 0;
  socklen_t len = sizeof err;
  ASSERT_EQ(::getsockopt(c.fd, SOL_SOCKET, SO_ERROR, &err, &len), 0);
  EXPECT_EQ(err, ECONNRESET);
  // The error was taken: reads now see the closed connection.
  char b;
  EXPECT_EQ(::read(c.fd, &b, 1), 0);
}

TEST(Data, UnconnectedReadIsENOTCONNWriteIsEPIPE) {
  Fd s = tcp_socket();
  char b[4] = {};
  errno = 0;
  EXPECT_EQ(::read(s, b, sizeof b), -1);
  EXPECT_EQ(errno, ENOTCONN);
  errno = 0;
  EXPECT_EQ(::send(s, b, sizeof b, MSG_NOSIGNAL), -1);
  EXPECT_EQ(errno, EPIPE);
}

TEST(Data, FullSendBufferGivesShortWriteThenEAGAIN) {
  Peer p, drain;
  Conn c = connect_to_peer(p, SOCK_NONBLOCK);
  std::vector<std::uint8_t> buf(256 * 1024);
  std::uint64_t off = 0;
  bool eagain = false;
  for (int i = 0; i < 10000 && !eagain; ++i) {
    fill_pattern(buf, off);
    ssize_t w = ::write(c.fd, buf.data(), buf.size());
    if (w < 0) {
      ASSERT_EQ(errno, EAGAIN) << errname(errno);
      eagain = true;
    } else {
      off += static_cast<std::uint64_t>(w);
    }
  }
  EXPECT_TRUE(eagain) << "the peer does not read, yet writes never blocked";
  EXPECT_GT(off, 0u);
  EXPECT_FALSE(poll_one(c.fd, POLLOUT, 0) & POLLOUT) << "writable right after EAGAIN";
  // The peer reads everything: the writer becomes writable again and the byte count matches.
  drain.post("drain " + id(c) + " 30000");
  EXPECT_TRUE(poll_one(c.fd, POLLOUT, 10000) & POLLOUT);
  ASSERT_EQ(::shutdown(c.fd, SHUT_WR), 0);
  auto r = drain.reply();
  ASSERT_GE(r.size(), 3u);
  EXPECT_EQ(r[1], std::to_string(off));
  EXPECT_EQ(r[2], "1");
}

TEST(Data, WritevAndReadvScatterGather) {
  Peer p;
  Conn c = connect_to_peer(p);
  char a[] = "one", b[] = "two", d[] = "three";
  iovec out[3] = {{a, 3}, {b, 3}, {d, 5}};
  EXPECT_EQ(::writev(c.fd, out, 3), 11);
  auto r = p.call("readhex " + id(c) + " 11 5000");
  EXPECT_EQ(r[1], hex("onetwothree"));
  p.call("sendhex " + id(c) + " " + hex("abcdefgh"));
  ASSERT_EQ(wait_readable_bytes(c.fd, 8), 8);
  char x[3], y[10];
  iovec in[2] = {{x, sizeof x}, {y, sizeof y}};
  EXPECT_EQ(::readv(c.fd, in, 2), 8);
  EXPECT_EQ(std::string(x, 3), "abc");
  EXPECT_EQ(std::string(y, 5), "defgh");
}

TEST(Data, RecvfromOnTcpLeavesNoAddress) {
  Peer p;
  Conn c = connect_to_peer(p);
  p.call("sendhex " + id(c) + " " + hex("from"));
  ASSERT_EQ(wait_readable_bytes(c.fd, 4), 4);
  char b[16];
  sockaddr_in from{};
  socklen_t len = sizeof from;
  EXPECT_EQ(::recvfrom(c.fd, b, sizeof b, 0, sa(from), &len), 4);
  EXPECT_EQ(len, 0u) << "TCP recvfrom reports no source address";
}

TEST(Data, SendtoWithNullAddressOnConnectedSocket) {
  Peer p;
  Conn c = connect_to_peer(p);
  EXPECT_EQ(::sendto(c.fd, "to", 2, 0, nullptr, 0), 2);
  auto r = p.call("readhex " + id(c) + " 2 5000");
  EXPECT_EQ(r[1], hex("to"));
}

TEST(Data, SendtoAddressIsIgnoredOnConnectedSocket) {
  Peer p;
  Conn c = connect_to_peer(p);
  auto other = make_addr(env().peer_ip, 9);
  EXPECT_EQ(::sendto(c.fd, "to", 2, 0, sa(other), sizeof other), 2) << errname(errno);
  auto r = p.call("readhex " + id(c) + " 2 5000");
  EXPECT_EQ(r[1], hex("to"));
}

TEST(Data, SendmsgAndRecvmsgWithIovecs) {
  Peer p;
  Conn c = connect_to_peer(p);
  char a[] = "hdr:", b[] = "body";
  iovec out[2] = {{a, 4}, {b, 4}};
  msghdr m{};
  m.msg_iov = out;
  m.msg_iovlen = 2;
  EXPECT_EQ(::sendmsg(c.fd, &m, 0), 8);
  auto r = p.call("readhex " + id(c) + " 8 5000");
  EXPECT_EQ(r[1], hex("hdr:body"));

  p.call("sendhex " + id(c) + " " + hex("0123456789"));
  ASSERT_EQ(wait_readable_bytes(c.fd, 10), 10);
  char x[4], y[4];
  iovec in[2] = {{x, 4}, {y, 4}};
  sockaddr_in from{};
  msghdr rm{};
  rm.msg_name = &from;
  rm.msg_namelen = sizeof from;
  rm.msg_iov = in;
  rm.msg_iovlen = 2;
  rm.msg_flags = -1;
  EXPECT_EQ(::recvmsg(c.fd, &rm, 0), 8);
  EXPECT_EQ(std::string(x, 4), "0123");
  EXPECT_EQ(std::string(y, 4), "4567");
  EXPECT_EQ(rm.msg_namelen, 0u);
  EXPECT_EQ(rm.msg_flags, 0);
  char rest[8];
  EXPECT_EQ(::recv(c.fd, rest, sizeof rest, 0), 2);
  EXPECT_EQ(std::string(rest, 2), "89");
}

TEST(Data, SendmmsgSendsEveryMessageInOrder) {
  Peer p;
  Conn c = connect_to_peer(p);
  char m1[] = "first,", m2[] = "second,", m3[] = "third";
  iovec v[3] = {{m1, 6}, {m2, 7}, {m3, 5}};
  mmsghdr msgs[3]{};
  for (int i = 0; i < 3; ++i) {
    msgs[i].msg_hdr.msg_iov = &v[i];
    msgs[i].msg_hdr.msg_iovlen = 1;
  }
  EXPECT_EQ(::sendmmsg(c.fd, msgs, 3, 0), 3);
  EXPECT_EQ(msgs[0].msg_len, 6u);
  EXPECT_EQ(msgs[1].msg_len, 7u);
  EXPECT_EQ(msgs[2].msg_len, 5u);
  auto r = p.call("readhex " + id(c) + " 18 5000");
  EXPECT_EQ(r[1], hex("first,second,third"));
}

TEST(Data, RecvmmsgFillsMessagesUntilNoMoreData) {
  Peer p;
  Conn c = connect_to_peer(p);
  p.call("send " + id(c) + " 100");
  ASSERT_EQ(wait_readable_bytes(c.fd, 100), 100);
  std::uint8_t b1[60], b2[60], b3[60];
  iovec v[3] = {{b1, 60}, {b2, 60}, {b3, 60}};
  mmsghdr msgs[3]{};
  for (int i = 0; i < 3; ++i) {
    msgs[i].msg_hdr.msg_iov = &v[i];
    msgs[i].msg_hdr.msg_iovlen = 1;
  }
  EXPECT_EQ(::recvmmsg(c.fd, msgs, 3, MSG_DONTWAIT, nullptr), 2);
  EXPECT_EQ(msgs[0].msg_len, 60u);
  EXPECT_EQ(msgs[1].msg_len, 40u);
  EXPECT_TRUE(check_pattern({b1, 60}, 0));
  EXPECT_TRUE(check_pattern({b2, 40}, 60));
  errno = 0;
  EXPECT_EQ(::recvmmsg(c.fd, msgs, 3, MSG_DONTWAIT, nullptr), -1);
  EXPECT_EQ(errno, EAGAIN);
}

TEST(Data, SendfileSendsTheFileAndAdvancesTheOffset) {
  Peer p, drain;
  Conn c = connect_to_peer(p);
  char path[] = "/tmp/pno-semantics-sendfile-XXXXXX";
  Fd f(::mkstemp(path));
  ASSERT_GE(f.get(), 0);
  ::unlink(path);
  const std::size_t n = 300000;
  auto data = pattern(n);
  ASSERT_EQ(::write(f, data.data(), n), static_cast<ssize_t>(n));
  drain.post("drain " + id(c) + " 20000");
  // With an offset: the file position stays where it is.
  off_t off = 0;
  while (static_cast<std::size_t>(off) < n / 2) {
    ssize_t k = ::sendfile(c.fd, f, &off, n / 2 - static_cast<std::size_t>(off));
    ASSERT_GT(k, 0) << errname(errno);
  }
  EXPECT_EQ(off, static_cast<off_t>(n / 2));
  EXPECT_EQ(::lseek(f, 0, SEEK_CUR), static_cast<off_t>(n));
  // Without: it reads from (and advances) the file position.
  ASSERT_EQ(::lseek(f, static_cast<off_t>(n / 2), SEEK_SET), static_cast<off_t>(n / 2));
  std::size_t sent = n / 2;
  while (sent < n) {
    ssize_t k = ::sendfile(c.fd, f, nullptr, n - sent);
    ASSERT_GT(k, 0) << errname(errno);
    sent += static_cast<std::size_t>(k);
  }
  EXPECT_EQ(::lseek(f, 0, SEEK_CUR), static_cast<off_t>(n));
  EXPECT_EQ(::sendfile(c.fd, f, nullptr, 100), 0) << "at end of file";
  ASSERT_EQ(::shutdown(c.fd, SHUT_WR), 0);
  auto r = drain.reply();
  ASSERT_GE(r.size(), 3u);
  EXPECT_EQ(r[1], std::to_string(n));
  EXPECT_EQ(r[2], "1");
}

TEST(Data, MsgPeekLeavesDataInPlace) {
  Peer p;
  Conn c = connect_to_peer(p);
  p.call("sendhex " + id(c) + " " + hex("hello world"));
  ASSERT_EQ(wait_readable_bytes(c.fd, 11), 11);
  char b[32];
  EXPECT_EQ(::recv(c.fd, b, 5, MSG_PEEK), 5);
  EXPECT_EQ(std::string(b, 5), "hello");
  EXPECT_EQ(::recv(c.fd, b, sizeof b, MSG_PEEK), 11);
  int avail = 0;
  ASSERT_EQ(::ioctl(c.fd, FIONREAD, &avail), 0);
  EXPECT_EQ(avail, 11);
  EXPECT_EQ(::recv(c.fd, b, sizeof b, 0), 11);
  EXPECT_EQ(std::string(b, 11), "hello world");
}

TEST(Data, MsgWaitallCollectsAcrossSegments) {
  Peer p, sender;
  Conn c = connect_to_peer(p);
  sender.post("sendchunks " + id(c) + " 3000 1000 50");
  std::vector<std::uint8_t> b(3000);
  EXPECT_EQ(::recv(c.fd, b.data(), b.size(), MSG_WAITALL), 3000);
  EXPECT_TRUE(check_pattern(b, 0));
  sender.reply();
}

TEST(Data, MsgWaitallReturnsShortAtEof) {
  Peer p;
  Conn c = connect_to_peer(p);
  p.call("send " + id(c) + " 500");
  p.call("shutwr " + id(c));
  std::vector<std::uint8_t> b(3000);
  EXPECT_EQ(::recv(c.fd, b.data(), b.size(), MSG_WAITALL), 500);
}

TEST(Data, MsgMoreDataIsDeliveredWithTheNextSend) {
  Peer p;
  Conn c = connect_to_peer(p);
  EXPECT_EQ(::send(c.fd, "abc", 3, MSG_MORE), 3);
  EXPECT_EQ(::send(c.fd, "def", 3, 0), 3);
  auto r = p.call("readhex " + id(c) + " 6 5000");
  EXPECT_EQ(r[1], hex("abcdef"));
}

TEST(Data, WriteAfterShutdownRaisesSigpipe) {
  Peer p;
  Conn c = connect_to_peer(p);
  ASSERT_EQ(::shutdown(c.fd, SHUT_WR), 0);
  int before = sigpipe_count();
  errno = 0;
  EXPECT_EQ(::write(c.fd, "x", 1), -1);
  EXPECT_EQ(errno, EPIPE);
  EXPECT_EQ(sigpipe_count(), before + 1) << "no SIGPIPE";
}

TEST(Data, MsgNosignalSuppressesSigpipe) {
  Peer p;
  Conn c = connect_to_peer(p);
  ASSERT_EQ(::shutdown(c.fd, SHUT_WR), 0);
  int before = sigpipe_count();
  errno = 0;
  EXPECT_EQ(::send(c.fd, "x", 1, MSG_NOSIGNAL), -1);
  EXPECT_EQ(errno, EPIPE);
  EXPECT_EQ(sigpipe_count(), before) << "SIGPIPE despite MSG_NOSIGNAL";
}

TEST(Data, WriteAfterPeerResetRaisesSigpipe) {
  Peer p;
  Conn c = connect_to_peer(p);
  p.call("rst " + id(c));
  ASSERT_TRUE(poll_one(c.fd, POLLIN, 5000) & POLLERR);
  char b;
  ASSERT_EQ(::read(c.fd, &b, 1), -1);  // takes the ECONNRESET
  int before = sigpipe_count();
  errno = 0;
  EXPECT_EQ(::write(c.fd, "x", 1), -1);
  EXPECT_EQ(errno, EPIPE);
  EXPECT_EQ(sigpipe_count(), before + 1);
}

}  // namespace
}  // namespace pno::semtest
