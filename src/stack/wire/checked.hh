// Result of a checked wire-view constructor: the view, or the counter naming why the bytes were
// rejected. Callers count the reason and drop the packet; no exceptions, no UB on hostile input.
#pragma once

#include <optional>

#include "stack/counters.hh"

namespace pno::wire {

template <typename View>
class Checked {
 public:
  Checked(View v) : view_(v) {}                  // NOLINT(google-explicit-constructor)
  Checked(Counter reason) : reason_(reason) {}   // NOLINT(google-explicit-constructor)

  [[nodiscard]] bool ok() const { return view_.has_value(); }
  explicit operator bool() const { return ok(); }
  /// The drop reason; only meaningful when !ok().
  [[nodiscard]] Counter reason() const { return reason_; }
  const View& operator*() const { return *view_; }
  const View* operator->() const { return &*view_; }

 private:
  std::optional<View> view_;
  Counter reason_{};
};

}  // namespace pno::wire
