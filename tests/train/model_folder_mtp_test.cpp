// --load of a model folder without MTP layers into a run that asks for them (--mtp-num-layers):
// the folder's tensors load, the MTP layers keep the new model's initialisation, and the
// returned notes name them; a folder whose other shapes differ is still refused.
#include <gtest/gtest.h>

#include <unistd.h>

#include <filesystem>
#include <map>

#include "common/check.h"
#include "moe/checkpoint/model_io.h"
#include "moe/nn/model_zoo.h"
#include "moe/train/train_checkpoint.h"

namespace moe::train {
namespace {

namespace fs = std::filesystem;

TEST(ModelFolderMtp, MissingMtpLayersStartFresh) {
  const fs::path dir =
      fs::path(::testing::TempDir()) / ("moe_folder_mtp_" + std::to_string(::getpid()));
  fs::remove_all(dir);
  nn::ModelConfig with_mtp = nn::model_zoo("deepseek-v3-tiny");
  ASSERT_GT(with_mtp.mtp_num_layers, 0);
  nn::ModelConfig without = with_mtp;
  without.mtp_num_layers = 0;
  nn::GPTModel saved(without, DType::f32, Device::cpu(), 7);
  checkpoint::save_model(dir.string(), saved);

  nn::GPTModel model(with_mtp, DType::f32, Device::cpu(), 1234);
  nn::GPTModel fresh(with_mtp, DType::f32, Device::cpu(), 1234);
  const std::vector<std::string> notes = load_model_folder_weights(dir.string(), model, nullptr);
  bool named = false;
  for (const std::string& n : notes) named = named || n.find("MTP layers") != std::string::npos;
  EXPECT_TRUE(named) << "no note names the fresh MTP layers";
  // The folder's tensors are the saved model's; the MTP layers' are the new model's.
  std::map<std::string, nn::Parameter*> from_saved, from_fresh;
  for (nn::Parameter* p : saved.parameters()) from_saved[p->name] = p;
  for (nn::Parameter* p : fresh.parameters()) from_fresh[p->name] = p;
  size_t mtp = 0;
  for (nn::Parameter* p : model.parameters()) {
    const auto it = from_saved.find(p->name);
    if (it != from_saved.end()) {
      EXPECT_TRUE(test::equal(p->value, it->second->value, p->name));
    } else {
      ++mtp;
      EXPECT_TRUE(test::equal(p->value, from_fresh.at(p->name)->value, p->name));
    }
  }
  EXPECT_GT(mtp, 0u);

  // Other shapes (one more decoder layer) are still refused.
  nn::ModelConfig other = with_mtp;
  other.num_layers += 1;
  other.moe_layer_pattern.push_back(other.moe_layer_pattern.back());
  nn::GPTModel different(other, DType::f32, Device::cpu(), 1234);
  EXPECT_THROW(load_model_folder_weights(dir.string(), different, nullptr), Error);
  fs::remove_all(dir);
}

}  // namespace
}  // namespace moe::train
