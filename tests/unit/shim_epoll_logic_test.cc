// Emulated epoll's report rules for offloaded members (epoll(7), epoll_ctl(2)).
#include <gtest/gtest.h>

#include "shim/epoll_logic.hh"

namespace pno::shim {
namespace {

using channel::EdgeMarks;

/// Marks that differ only in status: an edge for every member.
EdgeMarks st(std::uint64_t status) { return EdgeMarks{0, 0, status}; }

TEST(ShimEpollRules, LevelTriggeredReportsWhileReady) {
  MemberState m{EPOLLIN};
  EXPECT_EQ(epoll_member_events(m, EPOLLIN | EPOLLOUT, st(1), true), std::uint32_t{EPOLLIN});
  EXPECT_EQ(epoll_member_events(m, EPOLLIN | EPOLLOUT, st(1), true), std::uint32_t{EPOLLIN});
  EXPECT_EQ(epoll_member_events(m, EPOLLOUT, st(2), true), 0u);  // not interested in OUT
}

TEST(ShimEpollRules, ErrorAndHangupAreReportedUnasked) {
  MemberState m{EPOLLIN};
  EXPECT_EQ(epoll_member_events(m, EPOLLERR | EPOLLHUP, st(1), true), std::uint32_t{EPOLLERR | EPOLLHUP});
  MemberState none{0};
  EXPECT_EQ(epoll_member_events(none, EPOLLHUP | EPOLLIN, st(1), true), std::uint32_t{EPOLLHUP});
}

TEST(ShimEpollRules, RdhupOnlyWhenAsked) {
  MemberState plain{EPOLLIN};
  EXPECT_EQ(epoll_member_events(plain, EPOLLIN | EPOLLRDHUP, st(1), true), std::uint32_t{EPOLLIN});
  MemberState rd{EPOLLIN | EPOLLRDHUP};
  EXPECT_EQ(epoll_member_events(rd, EPOLLIN | EPOLLRDHUP, st(1), true), std::uint32_t{EPOLLIN | EPOLLRDHUP});
}

TEST(ShimEpollRules, EdgeTriggeredReportsOncePerEdge) {
  MemberState m{EPOLLIN | EPOLLET};
  EXPECT_EQ(epoll_member_events(m, EPOLLIN, st(5), true), std::uint32_t{EPOLLIN});  // first look: ready
  EXPECT_EQ(epoll_member_events(m, EPOLLIN, st(5), true), 0u);                      // nothing new
  EXPECT_EQ(epoll_member_events(m, EPOLLIN, st(6), true), std::uint32_t{EPOLLIN});  // state changed
  EXPECT_EQ(epoll_member_events(m, EPOLLIN, st(6), true), 0u);
}

TEST(ShimEpollRules, EdgeTriggeredEventOutsideInterestIsConsumedSilently) {
  MemberState m{EPOLLOUT | EPOLLET};
  EXPECT_EQ(epoll_member_events(m, 0, st(1), true), 0u);
  EXPECT_EQ(epoll_member_events(m, EPOLLIN, st(2), true), 0u);  // data arrived: not asked for
  // The send buffer opened later: a new edge.
  EXPECT_EQ(epoll_member_events(m, EPOLLIN | EPOLLOUT, st(3), true), std::uint32_t{EPOLLOUT});
}

TEST(ShimEpollRules, EdgeTriggeredInputIgnoresSendRingProgress) {
  // Unread data stays readable while the engine drains the send ring: an EPOLLIN member must not
  // hear of it again (Linux's write-space wake-up carries EPOLLOUT, outside its interest).
  MemberState in{EPOLLIN | EPOLLET};
  EXPECT_EQ(epoll_member_events(in, EPOLLIN | EPOLLOUT, EdgeMarks{1, 0, 7}, true), std::uint32_t{EPOLLIN});
  EXPECT_EQ(epoll_member_events(in, EPOLLIN | EPOLLOUT, EdgeMarks{1, 500, 7}, true), 0u);
  EXPECT_EQ(epoll_member_events(in, EPOLLIN | EPOLLOUT, EdgeMarks{2, 500, 7}, true), std::uint32_t{EPOLLIN});
  // And the other way round: an EPOLLOUT member does not hear of arriving bytes.
  MemberState out{EPOLLOUT | EPOLLET};
  EXPECT_EQ(epoll_member_events(out, EPOLLIN | EPOLLOUT, EdgeMarks{1, 0, 7}, true), std::uint32_t{EPOLLOUT});
  EXPECT_EQ(epoll_member_events(out, EPOLLIN | EPOLLOUT, EdgeMarks{9, 0, 7}, true), 0u);
  EXPECT_EQ(epoll_member_events(out, EPOLLIN | EPOLLOUT, EdgeMarks{9, 64, 7}, true), std::uint32_t{EPOLLOUT});
  // A member asking for both reports every ready event on either edge, as Linux reports the
  // item's whole readiness once it is queued.
  MemberState both{EPOLLIN | EPOLLOUT | EPOLLET};
  EXPECT_EQ(epoll_member_events(both, EPOLLIN | EPOLLOUT, EdgeMarks{1, 0, 7}, true), std::uint32_t{EPOLLIN | EPOLLOUT});
  EXPECT_EQ(epoll_member_events(both, EPOLLIN | EPOLLOUT, EdgeMarks{1, 8, 7}, true), std::uint32_t{EPOLLIN | EPOLLOUT});
}

TEST(ShimEpollRules, EdgeTriggeredStatusChangeReachesEveryMember) {
  // FIN, error or a state change: no key, every member hears it (sock_def_wakeup).
  MemberState in{EPOLLIN | EPOLLET};
  EXPECT_EQ(epoll_member_events(in, EPOLLIN, EdgeMarks{4, 4, 1}, true), std::uint32_t{EPOLLIN});
  EXPECT_EQ(epoll_member_events(in, EPOLLIN | EPOLLHUP, EdgeMarks{4, 4, 2}, true), std::uint32_t{EPOLLIN | EPOLLHUP});
}

TEST(ShimEpollRules, PeekDoesNotConsumeAnEdge) {
  MemberState m{EPOLLIN | EPOLLET};
  EXPECT_EQ(epoll_member_events(m, EPOLLIN, st(9), false), std::uint32_t{EPOLLIN});
  EXPECT_EQ(epoll_member_events(m, EPOLLIN, st(9), false), std::uint32_t{EPOLLIN});
  EXPECT_EQ(epoll_member_events(m, EPOLLIN, st(9), true), std::uint32_t{EPOLLIN});
  EXPECT_EQ(epoll_member_events(m, EPOLLIN, st(9), false), 0u);
}

TEST(ShimEpollRules, OneShotDisablesAfterTheFirstReport) {
  MemberState m{EPOLLIN | EPOLLONESHOT};
  EXPECT_EQ(epoll_member_events(m, 0, st(1), true), 0u);  // not ready: stays armed
  EXPECT_FALSE(m.disabled);
  EXPECT_EQ(epoll_member_events(m, EPOLLIN, st(2), true), std::uint32_t{EPOLLIN});
  EXPECT_TRUE(m.disabled);
  EXPECT_EQ(epoll_member_events(m, EPOLLIN | EPOLLERR, st(3), true), 0u);  // even errors wait for MOD
  m = MemberState{EPOLLIN | EPOLLONESHOT};                           // EPOLL_CTL_MOD re-arms
  EXPECT_EQ(epoll_member_events(m, EPOLLIN, st(3), true), std::uint32_t{EPOLLIN});
}

TEST(ShimEpollRules, CtlChecksFollowLinux) {
  EXPECT_EQ(epoll_ctl_check(EPOLL_CTL_ADD, EPOLLIN, false, false, false), 0);
  EXPECT_EQ(epoll_ctl_check(EPOLL_CTL_ADD, EPOLLIN, true, false, false), EEXIST);
  EXPECT_EQ(epoll_ctl_check(EPOLL_CTL_MOD, EPOLLIN, false, false, false), ENOENT);
  EXPECT_EQ(epoll_ctl_check(EPOLL_CTL_DEL, 0, false, false, false), ENOENT);
  EXPECT_EQ(epoll_ctl_check(42, EPOLLIN, false, false, false), EINVAL);
  // EPOLLEXCLUSIVE: ADD only, with a restricted set of events, never on an epoll fd.
  EXPECT_EQ(epoll_ctl_check(EPOLL_CTL_ADD, EPOLLIN | EPOLLEXCLUSIVE, false, false, false), 0);
  EXPECT_EQ(epoll_ctl_check(EPOLL_CTL_ADD, EPOLLIN | EPOLLONESHOT | EPOLLEXCLUSIVE, false, false, false), EINVAL);
  EXPECT_EQ(epoll_ctl_check(EPOLL_CTL_ADD, EPOLLIN | EPOLLRDHUP | EPOLLEXCLUSIVE, false, false, false), EINVAL);
  EXPECT_EQ(epoll_ctl_check(EPOLL_CTL_ADD, EPOLLIN | EPOLLEXCLUSIVE, false, false, true), EINVAL);
  EXPECT_EQ(epoll_ctl_check(EPOLL_CTL_MOD, EPOLLIN | EPOLLEXCLUSIVE, true, false, false), EINVAL);
  EXPECT_EQ(epoll_ctl_check(EPOLL_CTL_MOD, EPOLLIN, true, true, false), EINVAL);
  EXPECT_EQ(epoll_ctl_check(EPOLL_CTL_DEL, 0, true, true, false), 0);
}

}  // namespace
}  // namespace pno::shim
