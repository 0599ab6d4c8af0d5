// `moe train --moe-use-upcycling` (Megatron's runtime upcycling): the step, in place of the
// plain --load, that makes the run's MoE model from a dense checkpoint and saves it before the
// first iteration. The scheme itself is checkpoint/upcycle.h.
//
// In order:
//   1. --load resolves to a model folder (train/model_folder.h: a training save folder with its
//      tracker, an iteration folder, or a moecore / Hugging Face model folder); a --load that
//      holds none of these is an error (upcycling needs a checkpoint).
//   2. Its model has MoE layers and it is a training checkpoint: this is the upcycled run,
//      resumed. Returns false; the caller loads it as usual (train_checkpoint.h, with
//      --finetune / --no-load-optim). (Megatron resumes an upcycled run only without the flag:
//      with it, it never reads --load as a checkpoint to resume; moecore resumes either way.)
//      An MoE model folder that is not a training checkpoint is an error.
//   3. A dense model: --save must not hold a checkpoint yet (Megatron's rule: upcycling starts
//      a new run there, once; resume it with --load <save>). The dense model is loaded on the
//      run's device in the run's dtype (a bf16 training checkpoint gives its bf16 weights, as
//      Megatron's dense model does), upcycled into the run's model (checkpoint::upcycle_model:
//      its fresh routers are the routers the scheme starts from), the optimizer's fp32 masters
//      are taken from the new weights, and the model is saved to --save as iteration 0 (Megatron
//      names its upcycled save iteration 1 yet trains from 0; moecore's name is the trainer's
//      iteration). Returns true: training starts from it with fresh optimizer state at
//      iteration 0.
#pragma once

#include "moe/train/train_run.h"

namespace moe::train {

// See above. Logs what it did through session.logger.
bool upcycle_dense_checkpoint(TrainSession& session);

}  // namespace moe::train
