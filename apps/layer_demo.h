// The default job until training exists: run one MoE layer forward and backward on a small
// default shape (GPU if present, else CPU) and print what it did.
#pragma once

namespace moe::app {
int run_layer_demo(bool force_cpu);
}
