// Parallel equals serial, for training: one set of cases (a small MoE model, a data / expert
// parallel mapping, DDP and optimizer options) that every backend runs. A case trains
// kParallelSteps steps on one rank without any parallel state (the reference) and on every rank
// of a world with the case's mapping; each rank then checks, naming itself, that
//   - the reported lm / aux losses and the gradient norm of every step equal the reference's,
//   - its final parameters equal the reference's: dense ones whole, expert ones as the box of
//     the reference's tensor its layout names (nn::ParamLayout),
//   - the optimizer state it holds equals the matching piece of the reference's,
// within the tolerance of the dtype: f64 on the CPU 1e-9 relative (the order of the sums
// differs between mappings), 2e-2 with --grad-reduce-in-bf16 (each sum rounded to bf16; the Adam
// moments, sums of gradients of both signs, drift further), bf16 on the GPU 3e-2 for the losses
// and the first step's gradient norm and 1e-1 for the weights, later gradient norms, the
// optimizer states and the expert bias not compared (see the .cpp); bitwise for a world of one rank
// without the distributed optimizer (the buffers and the parallel state change no arithmetic).
//
// Runners: Local threads (parallel_training_local_test.cpp) and MPI processes
// (parallel_training_mpi_main.cpp).
#pragma once

#include <gtest/gtest.h>

#include <ostream>
#include <string>
#include <vector>

#include "moe/dist/process_group.h"
#include "moe/nn/gpt_model.h"
#include "moe/train/trainer.h"

namespace moe::train::test {

inline constexpr int kParallelSteps = 5;

struct ParallelTrainingCase {
  std::string model;  // "gqa": 8 heads in 4 groups, QK-norm, softmax router, aux + z loss,
                      //        shared expert, one MTP layer (none with per-token loss);
                      // "mla": MLA attention, sigmoid router with expert bias, seq aux loss,
                      //        shared expert, one MTP layer
  int world = 1;
  int tp = 1;                        // --tensor-model-parallel-size
  bool sequence_parallel = false;    // --sequence-parallel
  int cp = 1;                        // --context-parallel-size (DP = world / (TP x CP))
  std::string cp_comm_type = "p2p";  // --cp-comm-type: p2p (the ring), all_gather or a2a
  int ep = 1, etp = 1;               // EDP = world / (EP x ETP x PP)
  // --pipeline-model-parallel-size, virtual stages per rank, --pipeline-model-parallel-layout
  // (empty: the even split). With PP > 1 the models have 4 decoder layers (the first dense)
  // so that PP 4 and PP 2 x VPP 2 have a layer per stage.
  int pp = 1, vpp = 1;
  std::string pp_layout;
  int layers = 0;  // decoder layers when not 0 (the first dense, the rest MoE), any PP
  // --decoder-first-pipeline-num-layers / --decoder-last-pipeline-num-layers (0: not given).
  int pp_first_layers = 0, pp_last_layers = 0;
  // --account-for-embedding-in-pipeline-split and --account-for-loss-in-pipeline-split.
  bool pp_account_for_ends = false;
  bool tied = false;                   // the output layer tied to the embedding (else untied)
  bool shared_expert_overlap = false;  // --moe-shared-expert-overlap (alltoall dispatcher)
  std::string dispatcher;              // "allgather" | "alltoall"
  bool distributed_optimizer = false;
  bool overlap = false;  // --overlap-grad-reduce (and --overlap-param-gather with the
                         // distributed optimizer); small buckets so there are several
  bool grad_reduce_in_bf16 = false;
  bool per_token_loss = false;   // --calculate-per-token-loss
  bool global_aux_loss = false;  // --moe-router-load-balancing-type global_aux_loss (GQA)
  // --hidden-dropout = --attention-dropout (0: none). The masks are counter-based on the global
  // sample index (ops/dropout.h), so any mapping draws the one-rank run's masks.
  double dropout = 0.0;
  // --moe-expert-capacity-factor (0: none, no tokens dropped) with
  // --moe-pad-expert-input-to-capacity: drop-and-pad, each expert's rows a fixed count.
  double capacity_factor = 0.0;
  // --moe-expert-rank-capacity-factor (0: none): the alltoall dispatcher's sync-free exchange of
  // fixed slots. Below 1 a slot is always short (the busiest destination gets at least the even
  // share), so every step is run again with the synchronising exchange; at the EP size or more
  // no slot can be (a pair's slot holds all T * K rows): no step is.
  double rank_capacity_factor = 0.0;
  // Activation recomputation (nn/recompute.h) in the parallel run only, so the one-rank
  // reference is the run without it: "" none; "full_uniform" (--recompute-granularity full
  // --recompute-method uniform --recompute-num-layers 2); "full_block" (block, 1: the first
  // layer of each chunk); "selective" (--recompute-modules moe mlp shared_experts).
  std::string recompute;
  // Per-layer CUDA graphs (--cuda-graph-impl local, 2 warm-up steps) in the parallel run only:
  // "" none; "attn" (--cuda-graph-modules attn); "router" (attn moe_router); "router_preprocess"
  // (attn moe_router moe_preprocess); "whole" (whole layers, with the cutlass grouped GEMM in
  // both runs so the MoE blocks can be captured). GPU runs only: skipped on the CPU.
  std::string cuda_graph;
};
std::string case_name(const ParallelTrainingCase& c);
inline void PrintTo(const ParallelTrainingCase& c, std::ostream* out) {
  *out << case_name(c);
}

// Every mapping of the matrix: worlds 1, 2, 4; EP 1, 2, 4 and ETP 1, 2 where they fit;
// distributed optimizer and overlap on and off; both dispatchers; both models; and TP 2, 4 with
// and without sequence parallelism, alone and with EP 2 and DP 2.
std::vector<ParallelTrainingCase> parallel_training_cases();
// A smaller set for process runners (each case starts a world).
std::vector<ParallelTrainingCase> parallel_training_cases_for_world(int world, bool all);
// The tensor-parallel cases of a world (all: every option; else one per mapping and model).
std::vector<ParallelTrainingCase> tensor_parallel_cases_for_world(int world, bool all);
// The context-parallel cases of a world (with TP, EP, DP and the distributed optimizer).
std::vector<ParallelTrainingCase> context_parallel_cases_for_world(int world);
// Pipeline parallelism: PP 2 and 4, VPP 2, layouts with the MTP layer in the loss's stage,
// combined with DP (distributed optimizer, overlap), EP, TP + SP and CP; tied and untied.
std::vector<ParallelTrainingCase> pipeline_parallel_cases_for_world(int world);
// This rank's pipeline chunks for the case's model (empty without PP).
std::vector<nn::PipelineStage> case_chunks(const ParallelTrainingCase& c,
                                           const nn::ModelConfig& config,
                                           const TrainParallel& parallel);
// What a process runner of `world` ranks runs: the above with all = false (of the pipeline
// cases, the GQA model's).
std::vector<ParallelTrainingCase> process_runner_cases(int world);

// Runs the case on this rank of `world` (world->size() == c.world) and checks it against the
// one-rank reference, which every rank computes itself. Only EXPECTs: a failing rank never
// leaves the others waiting in a collective.
void run_parallel_training_case(const std::shared_ptr<dist::ProcessGroup>& world,
                                const ParallelTrainingCase& c, Device device);

// A GQA case with the alltoall dispatcher (world 0: one rank without any parallel state).
ParallelTrainingCase gqa_alltoall_case(int world, int ep, int etp, bool distributed_optimizer,
                                       bool overlap = false);

// The case's recomputation (nn::RecomputeConfig{} when none).
nn::RecomputeConfig case_recompute(const ParallelTrainingCase& c);
// The pieces of a case, for tests built on the suite (distributed_checkpoint_test.cpp).
inline constexpr int64_t kCaseSeqLength = 8;
nn::ModelConfig case_model(const ParallelTrainingCase& c, DType dtype);
TrainConfig case_train_config();
std::vector<int32_t> case_tokens(int64_t vocab);
// The case's parallel state over `world` and DDP options; fills `groups` for the model.
TrainParallel case_parallel(const std::shared_ptr<dist::ProcessGroup>& world,
                            const ParallelTrainingCase& c, nn::ModelGroups& groups);
// The box (offset, box shape) of `full` read row-major in `view`, flattened, as f64 on the host.
Tensor extract_box(const Tensor& full, const Shape& view, const std::vector<int64_t>& offset,
                   const Shape& box);

}  // namespace moe::train::test
