// Atomic folder replacement (atomic_folder.h).
#include "moe/checkpoint/atomic_folder.h"

#include <fcntl.h>
#include <unistd.h>

#include <cerrno>
#include <cstdio>
#include <cstring>
#include <filesystem>
#include <random>
#include <sstream>

#include "moe/core/error.h"

namespace moe::checkpoint {

namespace fs = std::filesystem;

namespace {

bool is_model_folder(const fs::path& p) {
  return fs::exists(p / "config.json") || fs::exists(p / "model_config.json");
}

void sync_folder(const fs::path& folder) {
  const int fd = ::open(folder.c_str(), O_RDONLY | O_DIRECTORY | O_CLOEXEC);
  if (fd < 0) return;
  (void)::fsync(fd);  // best effort: some file systems do not sync folders
  ::close(fd);
}

std::string sibling_name(const fs::path& target, const char* what) {
  std::random_device rd;
  std::ostringstream name;  // (not an operator+ chain: GCC 12 gives a false -Wrestrict on it)
  name << '.' << target.filename().string() << '.' << what << '.' << ::getpid() << '.'
       << rd() % 1000000;
  return (target.parent_path() / name.str()).string();
}

}  // namespace

AtomicFolder::AtomicFolder(std::string target, bool overwrite) {
  fs::path t = fs::absolute(fs::path(target)).lexically_normal();
  if (t.filename().empty()) t = t.parent_path();  // "out/" -> "out"
  target_ = t.string();
  MOE_CHECK(!t.parent_path().empty() && fs::is_directory(t.parent_path()), "cannot write ",
            target_, ": its parent folder ", t.parent_path().string(), " does not exist");
  if (fs::exists(t)) {
    MOE_CHECK(fs::is_directory(t), "cannot write the model folder ", target_,
              ": a file of that name exists");
    MOE_CHECK(overwrite, "the output folder ", target_,
              " already exists (pass --force to replace it)");
    MOE_CHECK(fs::is_empty(t) || is_model_folder(t), "refusing to replace ", target_,
              ": it is neither empty nor a model folder (no config.json / model_config.json)");
  }
  temp_ = sibling_name(t, "tmp");
  std::error_code ec;
  fs::create_directory(temp_, ec);
  MOE_CHECK(!ec, "cannot create the temporary folder ", temp_, ": ", ec.message());
}

AtomicFolder::~AtomicFolder() {
  if (committed_) return;
  std::error_code ec;
  fs::remove_all(temp_, ec);
}

void AtomicFolder::commit() {
  MOE_CHECK(!committed_, "AtomicFolder ", target_, ": commit() called twice");
  sync_folder(temp_);
  const fs::path target(target_);
  if (!fs::exists(target)) {
    std::error_code ec;
    fs::rename(temp_, target, ec);
    MOE_CHECK(!ec, "cannot rename ", temp_, " to ", target_, ": ", ec.message());
  } else if (::renameat2(AT_FDCWD, temp_.c_str(), AT_FDCWD, target_.c_str(), RENAME_EXCHANGE) ==
             0) {
    // The old folder now sits at the temporary name.
    std::error_code ec;
    fs::remove_all(temp_, ec);
  } else {
    const int err = errno;
    MOE_CHECK(err == EINVAL || err == ENOSYS || err == ENOTSUP, "cannot replace ", target_,
              " with ", temp_, ": ", std::strerror(err));
    const std::string old = sibling_name(target, "old");
    std::error_code ec;
    fs::rename(target, old, ec);
    MOE_CHECK(!ec, "cannot move the old ", target_, " aside: ", ec.message());
    fs::rename(temp_, target, ec);
    if (ec) {
      std::error_code undo;
      fs::rename(old, target, undo);
      MOE_FAIL("cannot rename ", temp_, " to ", target_, ": ", ec.message());
    }
    fs::remove_all(old, ec);
  }
  committed_ = true;
  sync_folder(target.parent_path());
}

}  // namespace moe::checkpoint
