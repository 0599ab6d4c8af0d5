// TensorBoard event files (--tensorboard-dir), written without TensorFlow: a TFRecord file of
// Event protocol buffers, each record
//   uint64 length | uint32 masked_crc32c(length) | data | uint32 masked_crc32c(data)
// (little-endian; masked(c) = ((c >> 15) | (c << 17)) + 0xa282ead8), where the first Event holds
// file_version "brain.Event:2" and each later one a Summary with one scalar:
//   Event   { double wall_time = 1; int64 step = 2; string file_version = 3; Summary summary = 5; }
//   Summary { repeated Value value = 1; }   Value { string tag = 1; float simple_value = 2; }
// The protobuf wire encoding of these few fields is written by hand (varints, length-delimited
// fields, fixed 32/64-bit values). TensorBoard reads the files named events.out.tfevents.*.
#pragma once

#include <cstdint>
#include <fstream>
#include <string>

namespace moe::train {

class TensorBoardWriter {
 public:
  // Creates `dir` if needed and a new events.out.tfevents.<seconds>.<host> file in it.
  explicit TensorBoardWriter(const std::string& dir);
  void add_scalar(const std::string& tag, double value, int64_t step);
  void flush();
  const std::string& path() const { return path_; }

 private:
  void write_record(const std::string& data);

  std::string path_;
  std::ofstream out_;
};

namespace detail {
// Encodings, exposed for the tests.
std::string encode_scalar_event(double wall_time, int64_t step, const std::string& tag,
                                float value);
std::string encode_version_event(double wall_time);
uint32_t masked_crc32c(const std::string& bytes);
}  // namespace detail

}  // namespace moe::train
