// A folder written atomically: everything goes into a hidden temporary folder next to the
// target, and commit() puts it in place in one step (DESIGN.md principle 6: a reader sees the
// old folder or the complete new one). On Linux the swap with an existing target is
// renameat2(RENAME_EXCHANGE), atomic; where the file system refuses that, the old folder is
// renamed aside first (never lost: it is removed only after the new one is in place).
// Destroyed without commit() (an error was thrown), the temporary folder is removed.
#pragma once

#include <string>

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

}  // namespace moe::checkpoint
