// Atomic folders: the clean-up of the hidden temporaries a killed process leaves behind removes
// only folders of the project's own naming, of processes that are gone, older than this one;
// an ".old." copy whose target is missing is put back.
#include "moe/checkpoint/atomic_folder.h"

#include <gtest/gtest.h>
#include <unistd.h>

#include <chrono>
#include <filesystem>
#include <set>
#include <string>
#include <vector>

#include "io/safetensors_testing.h"

namespace moe::checkpoint {
namespace {

namespace fs = std::filesystem;

// No process has this pid (above Linux's largest pid_max, 2^22).
constexpr const char* kDeadPid = "99999999";

class AtomicFolderCleanup : public io::testing::ScratchFolder {
 protected:
  // A folder with one file, last modified an hour ago (before this process started).
  fs::path old_folder(const std::string& name) {
    const fs::path p = dir_ / name;
    fs::create_directories(p);
    io::testing::write_bytes((p / "model.safetensors").string(), "partial");
    fs::last_write_time(p, fs::file_time_type::clock::now() - std::chrono::hours(1));
    return p;
  }
};

TEST_F(AtomicFolderCleanup, RemovesOnlyStaleTemporariesOfItsOwnNaming) {
  const std::string dead = kDeadPid, mine = std::to_string(::getpid());
  old_folder(".iter_0000004.tmp." + dead + ".12");
  old_folder("..iter_0000004.tmp." + dead + ".12.tmp." + dead + ".34");  // nested (save_model)
  old_folder(".iter_0000006.tmp." + mine + ".5");                        // this process: in use
  old_folder(".iter_0000008.tmp.1.5");                                   // pid 1 is alive: in use
  old_folder(".model.tmp." + dead + ".7");                               // another target name
  old_folder(".iter_0000004.tmp.x.7");                                   // not the pattern
  old_folder("iter_0000002");                                            // a checkpoint
  const fs::path fresh = dir_ / (".iter_0000010.tmp." + dead + ".9");
  fs::create_directories(fresh);  // modified now: a writer elsewhere may be filling it

  const std::vector<std::string> done = remove_stale_temporaries(dir_.string(), "iter_[0-9]{7}");
  EXPECT_EQ(
      std::set<std::string>(done.begin(), done.end()),
      (std::set<std::string>{"removed .iter_0000004.tmp." + dead + ".12",
                             "removed ..iter_0000004.tmp." + dead + ".12.tmp." + dead + ".34"}));
  EXPECT_EQ(listing(),
            (std::set<std::string>{".iter_0000006.tmp." + mine + ".5", ".iter_0000008.tmp.1.5",
                                   ".model.tmp." + dead + ".7", ".iter_0000004.tmp.x.7",
                                   "iter_0000002", fresh.filename().string()}));
  EXPECT_TRUE(remove_stale_temporaries(path("missing"), "iter_[0-9]{7}").empty());
}

// Killed between the two renames of the fallback swap: the target is gone and its last
// complete copy is the ".old." folder, which is renamed back rather than removed.
TEST_F(AtomicFolderCleanup, PutsBackAnOldCopyWhoseTargetIsMissing) {
  const std::string dead = kDeadPid;
  old_folder(".iter_0000004.old." + dead + ".3");
  old_folder(".iter_0000004.tmp." + dead + ".2");
  old_folder(".iter_0000006.old." + dead + ".3");
  old_folder("iter_0000006");  // its target exists: the old copy is just stale
  const std::vector<std::string> done = remove_stale_temporaries(dir_.string(), "iter_[0-9]{7}");
  EXPECT_EQ(done.size(), 3u);
  EXPECT_EQ(listing(), (std::set<std::string>{"iter_0000004", "iter_0000006"}));
  EXPECT_EQ(io::testing::read_bytes((dir_ / "iter_0000004" / "model.safetensors").string()),
            "partial");
}

// An AtomicFolder of this process, not committed yet, is never touched.
TEST_F(AtomicFolderCleanup, LeavesAnOpenFolderOfThisProcessAlone) {
  AtomicFolder folder((dir_ / "iter_0000001").string(), /*overwrite=*/false);
  fs::last_write_time(folder.path(), fs::file_time_type::clock::now() - std::chrono::hours(1));
  EXPECT_TRUE(remove_stale_temporaries(dir_.string(), "iter_[0-9]{7}").empty());
  EXPECT_TRUE(fs::is_directory(folder.path()));
  folder.commit();
  EXPECT_EQ(listing(), std::set<std::string>{"iter_0000001"});
}

}  // namespace
}  // namespace moe::checkpoint
