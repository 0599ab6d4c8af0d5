// A folder written atomically: everything goes into a hidden temporary folder next to the
// target, and commit() puts it in place in one step (docs/design.md principle 6: a reader sees the
// old folder or the complete new one). On Linux the swap with an existing target is
// renameat2(RENAME_EXCHANGE), atomic; where the file system refuses that, the old folder is
// renamed aside first (never lost: it is removed only after the new one is in place).
// Destroyed without commit() (an error was thrown), the temporary folder is removed.
//
// A process killed before commit() or before its clean-up leaves its hidden folder behind
// (the target itself is never half-written); remove_stale_temporaries() removes those of
// earlier processes.
#pragma once

#include <string>
#include <vector>

namespace moe::checkpoint {

class AtomicFolder {
 public:
  // Creates the temporary folder. An existing `target` is an error unless `overwrite`, and
  // even then only an empty folder or a model folder (holding config.json or
  // model_config.json) is replaced, so that a mistyped path cannot wipe unrelated files.
  AtomicFolder(std::string target, bool overwrite);
  ~AtomicFolder();
  AtomicFolder(const AtomicFolder&) = delete;
  AtomicFolder& operator=(const AtomicFolder&) = delete;

  const std::string& path() const { return temp_; }  // write here
  const std::string& target() const { return target_; }
  void commit();

 private:
  std::string target_;
  std::string temp_;
  bool committed_ = false;
};

// The hidden folders an AtomicFolder of another process left in `parent` for targets whose
// names match `target_regex` (ECMAScript, the whole name): ".<target>.tmp.<pid>.<n>", the
// ".<target>.old.<pid>.<n>" a swap moved aside, and the nested ones (save_model inside a
// temporary folder). One is stale, and removed, only when all of these hold:
//   - its name is exactly that pattern (nothing else in `parent` is ever touched);
//   - no live process on this machine has a pid of its name (kill(pid, 0) says ESRCH), and
//     none is this process: a live writer keeps its folder;
//   - it was last modified before this process started: a pid says nothing about a writer on
//     another machine sharing the folder, but a folder that writer is still filling would
//     have changed since we started.
// An ".old." folder whose target is missing (killed between the two renames of the fallback
// swap) holds the last complete copy: it is renamed back to its target, not removed.
// Returns what was done, one line each ("removed .iter_0000004.tmp.123.456").
std::vector<std::string> remove_stale_temporaries(const std::string& parent,
                                                  const std::string& target_regex);

}  // namespace moe::checkpoint
