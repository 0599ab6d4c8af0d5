// Files written atomically: readers see either the old file or the complete new one, never a
// partial write (docs/design.md, principle 6: nothing is lost).
//
// AtomicFile writes to a fresh temporary name in the target's own folder (rename(2) is only
// atomic within one file system), and commit() makes it durable and visible in that order:
//   write all bytes -> fsync(file) -> close -> rename(temp, target) -> fsync(folder)
// If the object is destroyed before commit() (an error was thrown mid-way), the temporary is
// removed and the target, if it existed, is untouched.
#pragma once

#include <cstddef>
#include <string>
#include <string_view>

namespace moe::io {

class AtomicFile {
 public:
  // Creates the temporary file next to `path`; throws moe::Error naming `path` and the system
  // error if the folder is missing or not writable, or saying `path` is a folder.
  explicit AtomicFile(std::string path);
  ~AtomicFile();  // removes the temporary unless committed
  AtomicFile(const AtomicFile&) = delete;
  AtomicFile& operator=(const AtomicFile&) = delete;

  // Appends bytes; throws on a short or failed write (disk full, file size limit).
  void write(const void* data, size_t bytes);
  void write(std::string_view text) { write(text.data(), text.size()); }
  // Bytes written so far.
  size_t size() const { return written_; }

  // fsync + rename over `path` + fsync of the folder. After this the object does nothing.
  void commit();

  const std::string& path() const { return path_; }
  const std::string& temp_path() const { return temp_path_; }

 private:
  void discard() noexcept;

  std::string path_;
  std::string temp_path_;
  int fd_ = -1;
  size_t written_ = 0;
  bool committed_ = false;
};

// Writes `contents` to `path` atomically (small files such as index JSON).
void write_file_atomically(const std::string& path, std::string_view contents);

}  // namespace moe::io
