// Emulated epoll's report rules for offloaded members (epoll(7), epoll_ctl(2)).
#include <gtest/gtest.h>

#include "shim/epoll_logic.hh"

namespace pno::shim {
namespace {

TEST(ShimEpollRules, LevelTriggeredReportsWhileReady) {
  MemberState m{EPOLLIN};
  EXPECT_EQ(epoll_member_events(m, EPOLLIN | EPOLLOUT, 1, true), std::uint32_t{EPOLLIN});
  EXPECT_EQ(epoll_member_events(m, EPOLLIN | EPOLLOUT, 1, true), std::uint32_t{EPOLLIN});
  EXPECT_EQ(epoll_member_events(m, EPOLLOUT, 2, true), 0u);  // not interested in OUT
}

TEST(ShimEpollRules, ErrorAndHangupAreReportedUnasked) {
  MemberState m{EPOLLIN};
  EXPECT_EQ(epoll_member_events(m, EPOLLERR | EPOLLHUP, 1, true), std::uint32_t{EPOLLERR | EPOLLHUP});
  MemberState none{0};
  EXPECT_EQ(epoll_member_events(none, EPOLLHUP | EPOLLIN, 1, true), std::uint32_t{EPOLLHUP});
}

TEST(ShimEpollRules, RdhupOnlyWhenAsked) {
  MemberState plain{EPOLLIN};
  EXPECT_EQ(epoll_member_events(plain, EPOLLIN | EPOLLRDHUP, 1, true), std::uint32_t{EPOLLIN});
  MemberState rd{EPOLLIN | EPOLLRDHUP};
  EXPECT_EQ(epoll_member_events(rd, EPOLLIN | EPOLLRDHUP, 1, true), std::uint32_t{EPOLLIN | EPOLLRDHUP});
}

TEST(ShimEpollRules, EdgeTriggeredReportsOncePerEventSequenceChange) {
  MemberState m{EPOLLIN | EPOLLET};
  EXPECT_EQ(epoll_member_events(m, EPOLLIN, 5, true), std::uint32_t{EPOLLIN});  // first look: ready
  EXPECT_EQ(epoll_member_events(m, EPOLLIN, 5, true), 0u);                      // nothing new
  EXPECT_EQ(epoll_member_events(m, EPOLLIN, 6, true), std::uint32_t{EPOLLIN});  // more data arrived
  EXPECT_EQ(epoll_member_events(m, EPOLLIN, 6, true), 0u);
}

TEST(ShimEpollRules, EdgeTriggeredEventOutsideInterestIsConsumedSilently) {
  MemberState m{EPOLLOUT | EPOLLET};
  EXPECT_EQ(epoll_member_events(m, 0, 1, true), 0u);
  EXPECT_EQ(epoll_member_events(m, EPOLLIN, 2, true), 0u);  // data arrived: not asked for
  // The send buffer opened later: a new edge.
  EXPECT_EQ(epoll_member_events(m, EPOLLIN | EPOLLOUT, 3, true), std::uint32_t{EPOLLOUT});
}

TEST(ShimEpollRules, PeekDoesNotConsumeAnEdge) {
  MemberState m{EPOLLIN | EPOLLET};
  EXPECT_EQ(epoll_member_events(m, EPOLLIN, 9, false), std::uint32_t{EPOLLIN});
  EXPECT_EQ(epoll_member_events(m, EPOLLIN, 9, false), std::uint32_t{EPOLLIN});
  EXPECT_EQ(epoll_member_events(m, EPOLLIN, 9, true), std::uint32_t{EPOLLIN});
  EXPECT_EQ(epoll_member_events(m, EPOLLIN, 9, false), 0u);
}

TEST(ShimEpollRules, OneShotDisablesAfterTheFirstReport) {
  MemberState m{EPOLLIN | EPOLLONESHOT};
  EXPECT_EQ(epoll_member_events(m, 0, 1, true), 0u);  // not ready: stays armed
  EXPECT_FALSE(m.disabled);
  EXPECT_EQ(epoll_member_events(m, EPOLLIN, 2, true), std::uint32_t{EPOLLIN});
  EXPECT_TRUE(m.disabled);
  EXPECT_EQ(epoll_member_events(m, EPOLLIN | EPOLLERR, 3, true), 0u);  // even errors wait for MOD
  m = MemberState{EPOLLIN | EPOLLONESHOT};                           // EPOLL_CTL_MOD re-arms
  EXPECT_EQ(epoll_member_events(m, EPOLLIN, 3, true), std::uint32_t{EPOLLIN});
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
