// Atomic folder replacement (atomic_folder.h).
#include "moe/checkpoint/atomic_folder.h"

#include <fcntl.h>
#include <unistd.h>

#include <cerrno>
#include <csignal>
#include <cstdio>
#include <cstring>
#include <filesystem>
#include <random>
#include <regex>
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

// When this process started (static initialisation), in the file system's clock.
const fs::file_time_type kProcessStart = fs::file_time_type::clock::now();

// Whether some process on this machine has this pid (EPERM: it exists, owned by another user).
bool process_alive(long long pid) {
  if (pid <= 0 || pid > 0x7fffffff) return false;
  return ::kill(static_cast<pid_t>(pid), 0) == 0 || errno != ESRCH;
}

}  // namespace

std::vector<std::string> remove_stale_temporaries(const std::string& parent,
                                                  const std::string& target_regex) {
  std::vector<std::string> done;
  std::error_code ec;
  if (!fs::is_directory(parent, ec)) return done;
  // sibling_name(): '.' + target + ".tmp|old." + pid + '.' + n, possibly nested.
  const std::regex whole("^(\\.+)(" + target_regex + ")((\\.(tmp|old)\\.[0-9]+\\.[0-9]+)+)$");
  const std::regex suffix("\\.(tmp|old)\\.([0-9]+)\\.[0-9]+");
  std::vector<fs::path> candidates;
  for (fs::directory_iterator it(parent, ec), end; !ec && it != end; it.increment(ec))
    candidates.push_back(it->path());
  for (const fs::path& path : candidates) {
    const std::string name = path.filename().string();
    std::smatch m;
    if (!std::regex_match(name, m, whole)) continue;
    const std::string target = m[2].str(), suffixes = m[3].str();
    bool in_use = false;
    int levels = 0;
    bool old = false;
    for (std::sregex_iterator s(suffixes.begin(), suffixes.end(), suffix), e; s != e; ++s) {
      const long long pid = std::stoll((*s)[2].str().substr(0, 12));
      in_use = in_use || pid == static_cast<long long>(::getpid()) || process_alive(pid);
      old = (*s)[1].str() == "old";
      ++levels;
    }
    const fs::file_time_type modified = fs::last_write_time(path, ec);
    if (in_use || ec || modified >= kProcessStart) continue;
    const fs::path target_path = fs::path(parent) / target;
    if (old && levels == 1 && m[1].length() == 1 && !fs::exists(target_path)) {
      fs::rename(path, target_path, ec);
      if (!ec) done.push_back("restored " + name + " as " + target);
      continue;
    }
    fs::remove_all(path, ec);
    if (!ec) done.push_back("removed " + name);
  }
  return done;
}

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
