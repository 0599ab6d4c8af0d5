// safetensors with CUDA tensors: writing from the GPU gives the same file as from the host, and
// loading onto the GPU (with or without a cast there) gives the host's values.
#include <gtest/gtest.h>

#include "common/check.h"
#include "io/safetensors_testing.h"
#include "moe/io/safetensors.h"

namespace moe::io {
namespace {

using namespace moe::io::testing;
using SafetensorsCuda = ScratchFolder;

TEST_F(SafetensorsCuda, WritesFromAndLoadsOntoTheGpu) {
  MOE_REQUIRE_GPU();
  const uint64_t seed = test::fresh_seed();
  SCOPED_TRACE(seed);
  const Tensor w = test::random_normal({257, 259}, DType::f32, seed).to(DType::bf16);
  const Tensor b = test::random_normal({259}, DType::f32, seed + 1);
  const Tensor ids = Tensor::from_vector<int64_t>({3, 1, 4}, {3});
  const Tensor empty = Tensor::empty({0, 8}, DType::bf16);
  const NamedTensors host = {{"w", w}, {"b", b}, {"ids", ids}, {"empty", empty}};
  NamedTensors gpu;
  for (const auto& [name, t] : host) gpu.emplace_back(name, t.to(Device::cuda()));

  write_safetensors(path("host.safetensors"), host);
  write_safetensors(path("gpu.safetensors"), gpu);
  EXPECT_EQ(read_bytes(path("gpu.safetensors")), read_bytes(path("host.safetensors")));

  const SafetensorsFile st = SafetensorsFile::open(path("gpu.safetensors"));
  for (const auto& [name, t] : host) {
    const Tensor on_gpu = st.load(name, Device::cuda());
    EXPECT_TRUE(on_gpu.is_cuda());
    EXPECT_TRUE(same_bytes(on_gpu, t)) << name;
  }
  // bf16 bytes cross the bus, the widening to f32 runs on the GPU: exact.
  const Tensor w32 = st.load("w", Device::cuda(), DType::f32);
  EXPECT_EQ(w32.dtype(), DType::f32);
  EXPECT_TRUE(test::equal(w32.to(Device::cpu()), w.to(DType::f32), "w as f32"));
  const Tensor b16 = st.load("b", Device::cuda(), DType::bf16);
  EXPECT_TRUE(same_bytes(b16, b.to(DType::bf16)));
  EXPECT_EQ(st.load("empty", Device::cuda(), DType::f32).numel(), 0);
}

TEST_F(SafetensorsCuda, ShardedRoundTripOnTheGpu) {
  MOE_REQUIRE_GPU();
  const uint64_t seed = test::fresh_seed();
  SCOPED_TRACE(seed);
  NamedTensors gpu;
  for (int i = 0; i < 5; ++i)
    gpu.emplace_back("layers." + std::to_string(i) + ".w",
                     test::random_normal({33, 17}, DType::bf16, seed + i, Device::cuda()));
  const ShardedWriteResult r = write_safetensors_sharded(dir_.string(), gpu, 2 * 33 * 17 * 2);
  EXPECT_EQ(r.files.size(), 3u);
  const SafetensorsCollection c = SafetensorsCollection::open(dir_.string());
  for (const auto& [name, t] : gpu)
    EXPECT_TRUE(same_bytes(c.load(name, Device::cuda()), t)) << name;
}

}  // namespace
}  // namespace moe::io
