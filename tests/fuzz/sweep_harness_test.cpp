// The bad-input sweep's own machinery (fuzz/sweep.h): mutants are reproducible from their seed,
// and the check fails a reader that throws without naming the file, throws std::bad_alloc or
// throws something that is not a std::exception, while it accepts a reader that returns or
// throws naming the file.
#include <gtest/gtest-spi.h>
#include <gtest/gtest.h>

#include <memory>
#include <new>
#include <stdexcept>
#include <string>

#include "fuzz/sweep.h"
#include "moe/core/error.h"

namespace moe::sweep {
namespace {

const std::string kJson = R"({"a": [1, 2, {"b": "x"}], "c": 3.5, "d": null})";

TEST(SweepHarness, MutantsAreReproducible) {
  for (uint64_t i = 0; i < 50; ++i) {
    const auto make = [](Rng& rng) { return mutate_json(kJson, rng, {"w"}); };
    const Mutant a = random_mutant("harness", i, make), b = random_mutant("harness", i, make);
    EXPECT_EQ(a.what, b.what);
    EXPECT_EQ(a.bytes, b.bytes);
  }
  Rng one(case_seed(1, "harness", 0)), other(case_seed(1, "harness", 1));
  EXPECT_NE(one.next(), other.next());
  EXPECT_NE(case_seed(1, "a", 0), case_seed(1, "b", 0));
}

TEST(SweepHarness, MutantsDiffer) {
  int changed = 0;
  for (uint64_t i = 0; i < 200; ++i) {
    Rng rng(case_seed(7, "differ", i));
    changed += mutate_json(kJson, rng, {"w"}).bytes != kJson;
    changed += mutate_bytes(kJson, rng).bytes != kJson;
    changed += mutate_yaml("a: 1\nb: [1, 2]\n", rng).bytes != "a: 1\nb: [1, 2]\n";
  }
  EXPECT_GT(changed, 560);
}

TEST(SweepHarness, JsonTokensFindValuesAndKeys) {
  const std::vector<JsonToken> tokens = json_tokens(kJson);
  EXPECT_EQ(json_keys(tokens).size(), 4u);  // a, b, c, d
  // {...}, [...], 1, 2, {...}, "x", 3.5, null
  EXPECT_EQ(json_value_starts(tokens).size(), 8u);
  EXPECT_EQ(tokens[json_value_last(tokens, 0)].end, kJson.size());
}

TEST(SweepHarness, TruncationsAndFields) {
  const std::string bytes(100, 'x');
  const std::vector<Mutant> cuts = truncations(bytes, 10);
  EXPECT_EQ(cuts.front().bytes.size(), 0u);
  EXPECT_EQ(cuts.back().bytes.size(), 99u);
  const std::vector<Mutant> fields = field_values(bytes, {{"n", 4, 2}});
  ASSERT_FALSE(fields.empty());
  for (const Mutant& m : fields) EXPECT_EQ(m.bytes.size(), bytes.size());
  EXPECT_EQ(fields[0].bytes.substr(4, 2), std::string(2, '\0'));
}

TEST(SweepHarness, AcceptsReadersThatKeepTheContract) {
  Sweep sweep("harness (good reader)");
  EXPECT_TRUE(sweep.check({"returns", "", ""}, {"data.bin"}, [] {}));
  EXPECT_FALSE(sweep.check({"throws naming the file", "", ""}, {"data.bin"},
                           [] { MOE_FAIL("/tmp/data.bin: truncated"); }));
  EXPECT_FALSE(sweep.check({"std::exception naming the file", "", ""}, {"data.bin"},
                           [] { throw std::runtime_error("cannot parse data.bin"); }));
  EXPECT_EQ(sweep.accepted(), 1);
  EXPECT_EQ(sweep.refused(), 2);
  EXPECT_EQ(sweep.failures(), 0u);
}

TEST(SweepHarness, FailsReadersThatBreakTheContract) {
  EXPECT_NONFATAL_FAILURE(
      {
        Sweep sweep("harness (bad reader)");
        sweep.check({"unnamed", "", ""}, {"data.bin"}, [] { throw std::runtime_error("stoll"); });
      },
      "does not name the file: stoll");
  EXPECT_NONFATAL_FAILURE(
      {
        Sweep sweep("harness (bad reader)");
        sweep.check({"unnamed moe::Error", "", ""}, {"data.bin"}, [] { MOE_FAIL("bad"); });
      },
      "moe::Error that does not name the file");
  EXPECT_NONFATAL_FAILURE(
      {
        Sweep sweep("harness (bad reader)");
        sweep.check({"allocation", "", ""}, {"data.bin"}, [] { throw std::bad_alloc(); });
      },
      "out of memory");
  EXPECT_NONFATAL_FAILURE(
      {
        Sweep sweep("harness (bad reader)");
        sweep.check({"not an exception", "", ""}, {"data.bin"}, [] { throw 42; });
      },
      "not derived from std::exception");
}

// The memory guard turns an allocation sized by a corrupt header into std::bad_alloc.
TEST(SweepHarness, MemoryGuardStopsHugeAllocations) {
#ifdef MOE_SWEEP_ASAN
  GTEST_SKIP() << "under AddressSanitizer its allocator limits allocations (ASAN_OPTIONS)";
#else
  static bool returned = true;
  EXPECT_NONFATAL_FAILURE(
      {
        Sweep sweep("harness (memory)");
        returned = sweep.check({"8 GiB", "", ""}, {"data.bin"}, [] {
          // Not touched: without the guard this maps address space, not memory.
          const std::unique_ptr<char[]> huge(new char[size_t{8} << 30]);
          volatile char* first = huge.get();
          *first = 1;
        });
      },
      "out of memory");
  EXPECT_FALSE(returned);
#endif
}

}  // namespace
}  // namespace moe::sweep
