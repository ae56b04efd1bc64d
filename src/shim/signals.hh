// Which signal interrupted a blocking wait (see signals.cc): the shim's sigaction()/signal()
// install a trampoline that notes, per thread, whether the handler that ran has SA_RESTART.
#pragma once

namespace pno::shim {

/// Forgets the handlers noted so far on this thread (call before sleeping).
void note_signals_clear();

/// After a sleep ended with EINTR: whether the handler(s) that ran on this thread since
/// note_signals_clear() all have SA_RESTART (Linux then restarts the socket call).
bool restart_after_signal();

}  // namespace pno::shim
