// load_model onto a GPU: every parameter and buffer arrives as the CPU load's tensor cast to the
// model dtype (bytes compared, f32 and bf16, FP8 dequantized on the host first), and the f32
// logits agree with the CPU model's.
#include <gtest/gtest.h>

#include "checkpoint/checkpoint_testing.h"
#include "moe/checkpoint/model_io.h"
#include "moe/nn/model_zoo.h"
#include "nn/gpt_test_util.h"

namespace moe::checkpoint {
namespace {

using namespace moe::checkpoint::testing;
using CheckpointModelIoCuda = io::testing::ScratchFolder;

TensorMap host_tensors(nn::GPTModel& model) {
  TensorMap out;
  for (nn::Parameter* p : model.parameters()) out[p->name] = p->value.to(Device::cpu());
  for (const nn::NamedBuffer& b : model.buffers()) out[b.name] = b.value->to(Device::cpu());
  return out;
}

TEST_F(CheckpointModelIoCuda, LoadsOntoTheGpu) {
  MOE_REQUIRE_GPU();
  const uint64_t seed = test::fresh_seed();
  SCOPED_TRACE(seed);
  for (const char* name : {"qwen3-moe-tiny", "deepseek-v3-tiny"}) {
    SCOPED_TRACE(name);
    const nn::ModelConfig config = nn::model_zoo(name);
    const Fp8BlockSize block{16, 32};
    write_hf_folder(dir_ / name, config, random_hf_tensors(config, DType::bf16, seed, true, block),
                    DType::bf16, block);
    auto cpu = load_model(path(name), DType::f32, Device::cpu());
    const TensorMap expected = host_tensors(*cpu);
    for (DType dtype : {DType::f32, DType::bf16}) {
      SCOPED_TRACE(dtype_name(dtype));
      auto gpu = load_model(path(name), dtype, Device::cuda());
      const TensorMap got = host_tensors(*gpu);
      ASSERT_EQ(got.size(), expected.size());
      for (const auto& [n, t] : got) {
        const Tensor& want = expected.at(n);
        EXPECT_TRUE(io::testing::same_bytes(t, t.dtype() == want.dtype() ? want : want.to(t.dtype())))
            << n;
      }
      if (dtype == DType::f32) {
        const Tensor ids = test::random_tokens(9, 2, config.vocab_size, seed);
        EXPECT_TRUE(test::close(gpu->logits(ids.to(Device::cuda())).to(Device::cpu()),
                                cpu->logits(ids), test::tolerance(DType::f32)));
      }
    }
  }
}

}  // namespace
}  // namespace moe::checkpoint
