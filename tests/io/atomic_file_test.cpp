// Atomic writes: a failed write (missing folder, an error thrown mid-way, the file size limit
// hit inside write()) leaves neither a partial target nor a temporary, and an existing target
// keeps its old bytes.
#include "moe/io/atomic_file.h"

#include <gtest/gtest.h>
#include <signal.h>
#include <sys/resource.h>
#include <unistd.h>

#include <stdexcept>

#include "io/safetensors_testing.h"
#include "moe/io/safetensors.h"

namespace moe::io {
namespace {

using namespace moe::io::testing;
using AtomicFileTest = ScratchFolder;

TEST_F(AtomicFileTest, CommitReplacesTheTargetAndLeavesNoTemporary) {
  write_bytes(path("t.bin"), "old");
  {
    AtomicFile file(path("t.bin"));
    file.write("new contents");
    EXPECT_EQ(read_bytes(path("t.bin")), "old");  // invisible until commit
    EXPECT_EQ(listing().size(), 2u);              // target + temporary, in the same folder
    EXPECT_EQ(fs::path(file.temp_path()).parent_path(), dir_);
    EXPECT_EQ(file.size(), 12u);
    file.commit();
  }
  EXPECT_EQ(read_bytes(path("t.bin")), "new contents");
  EXPECT_EQ(listing(), std::set<std::string>{"t.bin"});
}

TEST_F(AtomicFileTest, AnErrorMidWayLeavesNothingBehind) {
  write_bytes(path("keep.bin"), "precious");
  EXPECT_THROW(
      {
        AtomicFile file(path("keep.bin"));
        file.write("half of the new");
        throw std::runtime_error("the caller fails mid-way");
      },
      std::runtime_error);
  EXPECT_EQ(read_bytes(path("keep.bin")), "precious");
  EXPECT_THROW(
      {
        AtomicFile file(path("fresh.bin"));
        file.write("partial");
        throw std::runtime_error("again");
      },
      std::runtime_error);
  EXPECT_EQ(listing(), std::set<std::string>{"keep.bin"});
}

TEST_F(AtomicFileTest, MissingFolderIsAClearError) {
  const std::string target = path("no/such/folder/x.safetensors");
  EXPECT_TRUE(fails_with([&] { AtomicFile file(target); }, {target, "cannot create a temporary"}));
  EXPECT_TRUE(fails_with(
      [&] {
        write_safetensors(target, {{"w", Tensor::zeros({2}, DType::f32)}});
      },
      {target, "No such file or directory"}));
  // A regular file where the folder should be.
  write_bytes(path("plain"), "x");
  EXPECT_TRUE(fails_with([&] { write_file_atomically(path("plain/x.json"), "{}"); },
                         {path("plain/x.json")}));
  EXPECT_EQ(listing(), std::set<std::string>{"plain"});
}

// `moe forward --out DIR`, `moe preprocess --output-prefix` over a folder, ...: the message
// names the path and says it is a folder (it once said "rename from  failed", with the
// temporary's name already cleared).
TEST_F(AtomicFileTest, AFolderAsTheTargetIsAClearError) {
  fs::create_directories(dir_ / "out");
  EXPECT_TRUE(
      fails_with([&] { write_file_atomically(path("out"), "{}"); }, {path("out"), "is a folder"}));
  // A folder that appears while the file is written: rename(2) fails at commit.
  EXPECT_TRUE(fails_with(
      [&] {
        AtomicFile file(path("late"));
        file.write("bytes");
        fs::create_directories(dir_ / "late");
        file.commit();
      },
      {path("late"), "is a folder"}));
  EXPECT_EQ(listing(), (std::set<std::string>{"late", "out"}));  // no temporary left
}

TEST_F(AtomicFileTest, ReadOnlyFolderIsAClearError) {
  if (::geteuid() == 0) GTEST_SKIP() << "root writes into read-only folders";
  fs::create_directories(dir_ / "ro");
  fs::permissions(dir_ / "ro", fs::perms::owner_read | fs::perms::owner_exec);
  const std::string target = path("ro/model.safetensors");
  const auto result = fails_with(
      [&] {
        write_safetensors(target, {{"w", Tensor::zeros({2}, DType::f32)}});
      },
      {target, "Permission denied"});
  const bool empty = fs::is_empty(dir_ / "ro");
  fs::permissions(dir_ / "ro", fs::perms::owner_all);
  EXPECT_TRUE(result);
  EXPECT_TRUE(empty);
}

// The kernel refuses to grow a file past RLIMIT_FSIZE (EFBIG) while write_safetensors is in
// the middle of the data: a real I/O failure mid-way, without needing a full disk.
TEST_F(AtomicFileTest, WriteFailureInsideSafetensorsLeavesTheOldFile) {
  const std::string target = path("model.safetensors");
  write_safetensors(target, {{"w", Tensor::full({4}, 1.0, DType::f32)}});
  const std::string before = read_bytes(target);

  struct rlimit saved {};
  ASSERT_EQ(::getrlimit(RLIMIT_FSIZE, &saved), 0);
  auto* old_handler = ::signal(SIGXFSZ, SIG_IGN);  // get EFBIG instead of the signal
  struct rlimit small = saved;
  small.rlim_cur = 16 * 1024;
  ASSERT_EQ(::setrlimit(RLIMIT_FSIZE, &small), 0);
  const Tensor big = Tensor::full({64 * 1024}, 3.0, DType::f32);  // 256 KiB, written directly
  const auto result = fails_with(
      [&] {
        write_safetensors(target, {{"w", big}});
      },
      {target, "write failed"});
  ::setrlimit(RLIMIT_FSIZE, &saved);
  ::signal(SIGXFSZ, old_handler);

  EXPECT_TRUE(result);
  EXPECT_EQ(read_bytes(target), before);
  EXPECT_EQ(listing(), std::set<std::string>{"model.safetensors"});
}

}  // namespace
}  // namespace moe::io
