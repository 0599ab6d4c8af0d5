#include "moe/io/atomic_file.h"

#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

#include <atomic>
#include <cerrno>
#include <cstring>
#include <filesystem>
#include <random>
#include <sstream>

#include "moe/core/error.h"

namespace moe::io {
namespace {

std::string system_error(int err) {
  return std::strerror(err);
}

std::string folder_of(const std::string& path) {
  const std::filesystem::path parent = std::filesystem::path(path).parent_path();
  return parent.empty() ? std::string(".") : parent.string();
}

// A name no other writer (thread or process) picks: pid, a process-wide counter and a random
// word. The leading dot keeps it out of globs such as *.safetensors while it is incomplete.
std::string temp_name_for(const std::string& path) {
  static std::atomic<uint64_t> counter{0};
  thread_local std::mt19937_64 random{std::random_device{}()};
  const std::filesystem::path p(path);
  std::ostringstream name;  // (not operator+: GCC 12 gives a false -Wrestrict on that chain)
  name << '.' << p.filename().string() << ".tmp." << ::getpid() << '.' << counter.fetch_add(1)
       << '.' << random() % 1000000;
  return (p.parent_path() / name.str()).string();
}

// Makes the rename durable: the new directory entry reaches the disk. Some file systems do
// not support fsync on a folder (EINVAL); the rename is still atomic there.
void sync_folder(const std::string& folder, const std::string& path) {
  const int fd = ::open(folder.c_str(), O_RDONLY | O_DIRECTORY | O_CLOEXEC);
  MOE_CHECK(fd >= 0, path, ": cannot open its folder ", folder,
            " to sync it: ", system_error(errno));
  const int rc = ::fsync(fd);
  const int err = errno;
  ::close(fd);
  MOE_CHECK(rc == 0 || err == EINVAL || err == ENOTSUP, path, ": fsync of folder ", folder,
            " failed: ", system_error(err));
}

}  // namespace

AtomicFile::AtomicFile(std::string path) : path_(std::move(path)) {
  MOE_CHECK(!path_.empty(), "AtomicFile: empty path");
  // rename(2) cannot put a file over a folder: say so now, before any byte is written.
  MOE_CHECK(!std::filesystem::is_directory(path_), path_,
            " is a folder; give the path of the file to write");
  // O_EXCL: never reuse an existing name. Mode 0666 lets the umask decide the final
  // permissions, as for a file created in place.
  int err = 0;
  for (int attempt = 0; attempt < 16 && fd_ < 0; ++attempt) {
    temp_path_ = temp_name_for(path_);
    fd_ = ::open(temp_path_.c_str(), O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, 0666);
    err = errno;
    if (fd_ < 0 && err != EEXIST) break;
  }
  if (fd_ < 0) {
    temp_path_.clear();
    MOE_FAIL(path_, ": cannot create a temporary file in folder ", folder_of(path_), ": ",
             system_error(err));
  }
}

AtomicFile::~AtomicFile() {
  if (!committed_) discard();
}

void AtomicFile::discard() noexcept {
  if (fd_ >= 0) {
    ::close(fd_);
    fd_ = -1;
  }
  if (!temp_path_.empty()) {
    ::unlink(temp_path_.c_str());
    temp_path_.clear();
  }
}

void AtomicFile::write(const void* data, size_t bytes) {
  MOE_CHECK(fd_ >= 0 && !committed_, path_, ": write after commit or after a failed write");
  const char* p = static_cast<const char*>(data);
  size_t left = bytes;
  while (left > 0) {
    // Linux writes at most ~2 GiB per call: loop over partial writes.
    const ssize_t n = ::write(fd_, p, left);
    if (n < 0 && errno == EINTR) continue;
    if (n <= 0) {
      const int err = n < 0 ? errno : ENOSPC;
      discard();
      MOE_FAIL(path_, ": write failed after ", written_, " bytes: ", system_error(err),
               " (nothing was written to ", path_, ")");
    }
    p += n;
    left -= static_cast<size_t>(n);
    written_ += static_cast<size_t>(n);
  }
}

void AtomicFile::commit() {
  MOE_CHECK(fd_ >= 0 && !committed_, path_, ": commit after commit or after a failed write");
  if (::fsync(fd_) != 0) {
    const int err = errno;
    discard();
    MOE_FAIL(path_, ": fsync failed: ", system_error(err), " (nothing was written to ", path_, ")");
  }
  const int rc = ::close(fd_);
  fd_ = -1;
  if (rc != 0) {
    const int err = errno;
    discard();
    MOE_FAIL(path_, ": close failed: ", system_error(err), " (nothing was written to ", path_, ")");
  }
  if (::rename(temp_path_.c_str(), path_.c_str()) != 0) {
    const int err = errno;
    const std::string temp = temp_path_;  // discard() clears it
    discard();
    MOE_CHECK(err != EISDIR, path_, " is a folder; nothing was written");
    MOE_FAIL(path_, ": rename from ", temp, " failed: ", system_error(err),
             " (nothing was written to ", path_, ")");
  }
  committed_ = true;
  temp_path_.clear();
  sync_folder(folder_of(path_), path_);
}

void write_file_atomically(const std::string& path, std::string_view contents) {
  AtomicFile file(path);
  file.write(contents);
  file.commit();
}

}  // namespace moe::io
