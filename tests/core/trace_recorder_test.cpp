// core/trace_recorder.h: the spans a recording keeps (names, nesting depth, order, threads), what
// it leaves out (ranges outside the window, ranges opened before it), one recording at a time,
// and the hooks that tag a range's device work with the span's id.
#include "moe/core/trace_recorder.h"

#include <gtest/gtest.h>

#include <set>
#include <string>
#include <thread>
#include <vector>

#include "moe/core/trace_range.h"

namespace moe {
namespace {

const TraceSpan* find_span(const std::vector<TraceSpan>& spans, const std::string& name) {
  for (const TraceSpan& s : spans)
    if (s.name == name) return &s;
  return nullptr;
}

TEST(TraceRecorder, KeepsNestedRangesWithTheirDepthAndTimes) {
  { const TraceRange before("before"); }  // not recording: left out
  ASSERT_TRUE(TraceRecorder::start());
  EXPECT_TRUE(TraceRecorder::recording());
  {
    const TraceRange outer("outer");
    { const TraceRange inner("inner"); }
    traced("second", [] {});
  }
  const std::vector<TraceSpan> spans = TraceRecorder::stop();
  EXPECT_FALSE(TraceRecorder::recording());
  { const TraceRange after("after"); }  // left out too

  ASSERT_EQ(spans.size(), 3u);
  EXPECT_EQ(spans[0].name, "outer");  // sorted by begin time
  EXPECT_EQ(spans[1].name, "inner");
  EXPECT_EQ(spans[2].name, "second");
  EXPECT_EQ(spans[0].depth, 0);
  EXPECT_EQ(spans[1].depth, 1);
  EXPECT_EQ(spans[2].depth, 1);
  for (const TraceSpan& s : spans) EXPECT_LE(s.begin_ns, s.end_ns) << s.name;
  EXPECT_LE(spans[0].begin_ns, spans[1].begin_ns);
  EXPECT_LE(spans[1].end_ns, spans[2].begin_ns);
  EXPECT_GE(spans[0].end_ns, spans[2].end_ns);
  // Ids are unique, from 1, in order of opening.
  EXPECT_EQ(spans[0].id, 1u);
  EXPECT_EQ(spans[1].id, 2u);
  EXPECT_EQ(spans[2].id, 3u);
  EXPECT_EQ(spans[0].thread, spans[1].thread);
}

TEST(TraceRecorder, ARangeOpenedBeforeTheStartIsLeftOutAndItsChildrenKept) {
  std::vector<TraceSpan> spans;
  {
    const TraceRange open_before("open_before");
    ASSERT_TRUE(TraceRecorder::start());
    { const TraceRange child("child"); }
  }  // open_before closes while recording: not a span (its begin was not seen)
  spans = TraceRecorder::stop();
  ASSERT_EQ(spans.size(), 1u);
  EXPECT_EQ(spans[0].name, "child");
  EXPECT_EQ(spans[0].depth, 1);  // its real depth on the thread
}

TEST(TraceRecorder, ARangeStillOpenAtTheStopIsLeftOut) {
  std::vector<TraceSpan> spans;
  ASSERT_TRUE(TraceRecorder::start());
  {
    const TraceRange open_at_stop("open_at_stop");
    spans = TraceRecorder::stop();
    ASSERT_TRUE(TraceRecorder::start());  // a new recording does not get it either
  }
  EXPECT_TRUE(spans.empty());
  EXPECT_TRUE(TraceRecorder::stop().empty());
}

TEST(TraceRecorder, OneRecordingAtATime) {
  ASSERT_TRUE(TraceRecorder::start());
  EXPECT_FALSE(TraceRecorder::start());
  { const TraceRange r("kept"); }
  EXPECT_EQ(TraceRecorder::stop().size(), 1u);
  ASSERT_TRUE(TraceRecorder::start());  // and again after the stop
  EXPECT_TRUE(TraceRecorder::stop().empty());
}

TEST(TraceRecorder, ThreadsGetTheirOwnNumbersAndNesting) {
  ASSERT_TRUE(TraceRecorder::start());
  std::vector<std::thread> threads;
  for (int t = 0; t < 3; ++t)
    threads.emplace_back([] {
      const TraceRange a("thread_outer");
      const TraceRange b("thread_inner");
    });
  for (std::thread& t : threads) t.join();
  const std::vector<TraceSpan> spans = TraceRecorder::stop();
  ASSERT_EQ(spans.size(), 6u);
  std::set<int> numbers;
  for (const TraceSpan& s : spans) {
    numbers.insert(s.thread);
    EXPECT_EQ(s.depth, s.name == "thread_outer" ? 0 : 1);
  }
  EXPECT_EQ(numbers.size(), 3u);
}

std::vector<uint64_t> g_opened;
int g_closed = 0;

TEST(TraceRecorder, HooksSeeEachRecordedRangeOpenAndClose) {
  g_opened.clear();
  g_closed = 0;
  { const TraceRange r("not_recorded"); }
  ASSERT_TRUE(TraceRecorder::start());
  TraceRecorder::set_hooks({[](uint64_t id) { g_opened.push_back(id); }, [] { ++g_closed; }});
  {
    const TraceRange a("a");
    const TraceRange b("b");
  }
  TraceRecorder::set_hooks({});
  { const TraceRange c("unhooked"); }
  const std::vector<TraceSpan> spans = TraceRecorder::stop();
  EXPECT_EQ(g_opened,
            (std::vector<uint64_t>{find_span(spans, "a")->id, find_span(spans, "b")->id}));
  EXPECT_EQ(g_closed, 2);
  EXPECT_NE(find_span(spans, "unhooked"), nullptr);
}

}  // namespace
}  // namespace moe
