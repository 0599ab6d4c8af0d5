// TensorBoard event files: the records frame and checksum correctly and decode back to the
// scalars written (a small protobuf reader here, independent of the writer's encoder).
#include <gtest/gtest.h>
#include <unistd.h>

#include <cstring>
#include <filesystem>
#include <fstream>
#include <iterator>
#include <map>
#include <string>
#include <vector>

#include "moe/train/tensorboard.h"

namespace moe::train {
namespace {

uint64_t read_varint(const std::string& s, size_t& i) {
  uint64_t v = 0;
  for (int shift = 0;; shift += 7) {
    const auto byte = static_cast<unsigned char>(s.at(i++));
    v |= uint64_t(byte & 0x7F) << shift;
    if (!(byte & 0x80)) return v;
  }
}

// field number -> raw values (varints as numbers in `ints`, the rest as bytes).
struct Fields {
  std::map<int, std::string> bytes;
  std::map<int, uint64_t> ints;
};

Fields parse(const std::string& s) {
  Fields f;
  size_t i = 0;
  while (i < s.size()) {
    const uint64_t key = read_varint(s, i);
    const int field = int(key >> 3), type = int(key & 7);
    if (type == 0) {
      f.ints[field] = read_varint(s, i);
    } else if (type == 1 || type == 5) {
      const size_t n = type == 1 ? 8 : 4;
      f.bytes[field] = s.substr(i, n);
      i += n;
    } else {
      const uint64_t n = read_varint(s, i);
      f.bytes[field] = s.substr(i, n);
      i += n;
    }
  }
  return f;
}

TEST(TensorBoard, RecordsDecodeToTheScalarsWritten) {
  const auto dir = std::filesystem::temp_directory_path() / ("moe_tb_" + std::to_string(getpid()));
  std::filesystem::remove_all(dir);
  std::string path;
  {
    TensorBoardWriter w(dir.string());
    w.add_scalar("lm loss", 2.5, 10);
    w.add_scalar("learning-rate", 3e-4, 11);
    w.flush();
    path = w.path();
  }
  EXPECT_EQ(std::filesystem::path(path).filename().string().rfind("events.out.tfevents.", 0), 0u);
  std::ifstream in(path, std::ios::binary);
  const std::string file((std::istreambuf_iterator<char>(in)), std::istreambuf_iterator<char>());
  std::vector<std::string> records;
  for (size_t i = 0; i < file.size();) {
    ASSERT_LE(i + 12, file.size());
    uint64_t n;
    std::memcpy(&n, file.data() + i, 8);
    uint32_t length_crc, data_crc;
    std::memcpy(&length_crc, file.data() + i + 8, 4);
    EXPECT_EQ(length_crc, detail::masked_crc32c(file.substr(i, 8)));
    const std::string data = file.substr(i + 12, n);
    std::memcpy(&data_crc, file.data() + i + 12 + n, 4);
    EXPECT_EQ(data_crc, detail::masked_crc32c(data));
    records.push_back(data);
    i += 12 + n + 4;
  }
  ASSERT_EQ(records.size(), 3u);
  EXPECT_EQ(parse(records[0]).bytes[3], "brain.Event:2");
  const Fields event = parse(records[1]);
  EXPECT_EQ(event.ints.at(2), 10u);
  const Fields value = parse(parse(event.bytes.at(5)).bytes.at(1));
  EXPECT_EQ(value.bytes.at(1), "lm loss");
  float v;
  std::memcpy(&v, value.bytes.at(2).data(), 4);
  EXPECT_EQ(v, 2.5f);
  std::filesystem::remove_all(dir);
}

}  // namespace
}  // namespace moe::train
