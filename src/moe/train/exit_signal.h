// --exit-signal-handler (Megatron's): SIGTERM, which Slurm sends ahead of a pre-emption or the
// end of a job's time, and SIGINT no longer end `moe train` at once; the handler only notes the
// signal. After each iteration the ranks agree whether any of them got one (an all-reduce of
// max(signal number) over the world: a signal that reached some ranks only still stops every
// rank at the same iteration), and if so the run saves (with --save), says so and returns, and
// `moe train` exits with status 0.
//
// A second signal is not waited for: the first one puts back the handler that was installed
// before (interrupt_report.h's, in `moe train`: report and exit 128 + signo at once), so a
// second Ctrl-C or a scheduler's repeated SIGTERM ends the process as without the flag.
//
// Async-signal-safety: the handler stores the signal number in a lock-free atomic and calls
// sigaction(2) (both allowed in a handler). One handler per process: the state is global.
#pragma once

#include <memory>

#include "moe/core/device.h"
#include "moe/dist/process_group.h"

namespace moe::train {

// Installs the handler for SIGTERM and SIGINT, keeping the handlers it replaces for a second
// signal (see above). Clears any signal noted before.
void install_exit_signal_handler();

// The signal this process noted (SIGTERM, SIGINT), 0 when none.
int exit_signal_received();
// Forgets a noted signal (tests).
void reset_exit_signal();

// The signal any rank of `world` noted: the maximum of every rank's `mine` (0: none) over the
// world, through an all-reduce of a one-element tensor on `device` (a GPU under NCCL).
// Collective: every member calls it at the same point. Null world: `mine`.
int agreed_exit_signal(int mine, const std::shared_ptr<dist::ProcessGroup>& world, Device device);

// "SIGTERM", "SIGINT", else "signal N".
const char* exit_signal_name(int signo);

}  // namespace moe::train
