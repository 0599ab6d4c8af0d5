// What `moe train` says when SIGINT (Ctrl-C) or SIGTERM (a scheduler's stop) ends it: the
// signal, what was interrupted (the iteration in progress, an evaluation, a save) and what was
// last saved, e.g.
//
//   moe train: interrupted by SIGTERM during iteration 13 of 20; last checkpoint saved:
//   ck/iter_0000010 (resume with --load ck)
//
// then the process exits at once with status 128 + the signal number (130, 143), as a shell
// reports a process the signal ended. Nothing is flushed or saved: a save in progress stays
// an invisible temporary folder that the next save removes; the previous checkpoint and the
// tracker are intact (train_checkpoint.h).
//
// Async-signal-safety: the handler only calls write(2) and _exit(2). The text is formatted
// beforehand, by the run's thread, whenever the state changes (each iteration, save,
// evaluation), into one of three buffers, which is then published through a lock-free atomic
// index; the handler writes the published one. A buffer is written again only two updates
// after it was published, so a handler running on another thread reads a complete text.
// One run per process: the state is global.
#pragma once

#include <cstdint>
#include <string>

namespace moe::train {

// Installs the handler for SIGINT and SIGTERM (`moe train` does, before the run).
void install_interrupt_report();

// The run's state, for the report (cheap; also without the handler installed).
// Before training, or between phases: what the run is doing ("setting up", "sampling text").
void interrupt_report_phase(const std::string& phase);
// Iteration `iteration` (from 1) of `train_iters` is in progress.
void interrupt_report_iteration(int64_t iteration, int64_t train_iters);
// An evaluation after iteration `iteration`.
void interrupt_report_evaluation(int64_t iteration);
// A save of `folder` (<save>/iter_NNNNNNN) begins / is complete; `save_dir` for the hint.
void interrupt_report_saving(const std::string& folder);
void interrupt_report_saved(const std::string& folder, const std::string& save_dir);
// The checkpoint or model folder the run started from ("" : none).
void interrupt_report_loaded(const std::string& folder);
// Forgets everything (a new run in the same process: tests).
void interrupt_report_reset();

// The text the handler writes for `signo` now, newline included (tests).
std::string interrupt_report_text(int signo);

}  // namespace moe::train
