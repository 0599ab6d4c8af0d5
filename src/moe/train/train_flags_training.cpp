// `moe train`'s training flags: parallel sizes and data parallelism, batches, the learning-rate
// and weight-decay schedule, the optimizer, precision and NaN handling (train_flag_table.h).
#include "moe/core/error.h"
#include "moe/train/train_flag_table.h"

namespace moe::train::flags {
namespace {

int parallel_size(const std::string& flag, const std::string& v) {
  const int64_t n = as_count(flag, v, 1);
  MOE_CHECK(n <= (int64_t{1} << 20), flag, " ", v, " is larger than any world size");
  return static_cast<int>(n);
}

}  // namespace

// Parallel sizes and how the ranks meet.
void add_parallel_flags(std::vector<Entry>& t) {
  using S = ParseState;
  using V = const std::string&;
  t.push_back(value("--tensor-model-parallel-size", "TP",
                    "parallel.tensor_model_parallel_size: attention heads, dense MLP and shared "
                    "expert widths and the vocabulary split over TP ranks (a divisor of the heads, "
                    "the query groups, the FFN widths and the padded vocabulary); with MoE layers "
                    "and EP > 1 it needs --sequence-parallel, as in Megatron-LM",
                    [](S& s, V v) {
                      s.run.parallel.tensor_model_parallel_size =
                          parallel_size("--tensor-model-parallel-size", v);
                    }));
  t.push_back(value("--pipeline-model-parallel-size", "PP",
                    "parallel.pipeline_model_parallel_size: the decoder split into PP stages "
                    "(1F1B schedule; the layers as --pipeline-model-parallel-layout or the "
                    "first/last-stage flags say, else evenly)",
                    [](S& s, V v) {
                      s.run.parallel.pipeline_model_parallel_size =
                          parallel_size("--pipeline-model-parallel-size", v);
                    }));
  t.push_back(value("--num-virtual-stages-per-pipeline-rank", "V",
                    "virtual pipeline stages (model chunks) per pipeline rank: the interleaved "
                    "1F1B schedule",
                    [](S& s, V v) {
                      s.run.pipeline.virtual_stages = static_cast<int>(
                          as_count("--num-virtual-stages-per-pipeline-rank", v, 1));
                    }));
  t.push_back(value("--num-layers-per-virtual-pipeline-stage", "N",
                    "decoder layers per virtual pipeline stage: V = layers / (PP x N), the "
                    "interleaved 1F1B schedule",
                    [](S& s, V v) {
                      s.run.num_layers_per_virtual_pipeline_stage =
                          as_count("--num-layers-per-virtual-pipeline-stage", v, 1);
                    }));
  t.push_back(value("--microbatch-group-size-per-virtual-pipeline-stage", "N",
                    "interleaved 1F1B: micro-batches each virtual stage runs before the next "
                    "(Megatron's default: --pipeline-model-parallel-size)",
                    [](S& s, V v) {
                      s.run.train.microbatch_group_size_per_vp_stage =
                          as_count("--microbatch-group-size-per-virtual-pipeline-stage", v, 1);
                    }));
  t.push_back(value("--decoder-first-pipeline-num-layers", "N",
                    "decoder layers of the first pipeline stage (the rest split evenly)",
                    [](S& s, V v) {
                      s.run.pipeline.decoder_first_pipeline_num_layers =
                          as_count("--decoder-first-pipeline-num-layers", v, 1);
                    }));
  t.push_back(value("--decoder-last-pipeline-num-layers", "N",
                    "decoder layers of the last pipeline stage (the rest split evenly)",
                    [](S& s, V v) {
                      s.run.pipeline.decoder_last_pipeline_num_layers =
                          as_count("--decoder-last-pipeline-num-layers", v, 1);
                    }));
  t.push_back(
      toggle("--account-for-embedding-in-pipeline-split",
             "the embedding counts as a layer of the first stage in the even split",
             [](S& s, V) { s.run.pipeline.account_for_embedding_in_pipeline_split = true; }));
  t.push_back(toggle("--account-for-loss-in-pipeline-split",
                     "the loss counts as a layer of the last stage in the even split",
                     [](S& s, V) { s.run.pipeline.account_for_loss_in_pipeline_split = true; }));
  t.push_back(value("--pipeline-model-parallel-layout", "LAYOUT",
                    "every pipeline stage's parts in Megatron's grammar, stages split by '|': E "
                    "embedding, t decoder layer, m MTP layer, L loss, x*N repeats (e.g. "
                    "\"Et*3|(tt|)*29,m|L\"); virtual stages follow from the stage count",
                    [](S& s, V v) { s.run.pipeline.layout = v; }));
  t.push_back(value("--context-parallel-size", "CP",
                    "parallel.context_parallel_size: each sequence split over CP ranks in 2 CP "
                    "load-balanced chunks (2 CP must divide --seq-length); attention exchanges "
                    "keys and values as --cp-comm-type says",
                    [](S& s, V v) {
                      s.run.parallel.context_parallel_size =
                          parallel_size("--context-parallel-size", v);
                    }));
  t.push_back(value(
      "--cp-comm-type", "TYPE",
      "how context-parallel attention exchanges keys and values: p2p (Megatron-LM's default: "
      "a ring, each step's exchange overlapped with its attention; keeps this rank's keys and "
      "values), all_gather (the whole sequence's keys and values gathered) or a2a (Ulysses: "
      "all-to-alls trade the sequence split for a head split; the heads of a TP rank must divide "
      "by CP); a2a+p2p (hierarchical) is not built yet",
      [](S& s, V v) {
        s.run.cp_comm_type = one_of("--cp-comm-type", v, {"p2p", "all_gather", "a2a", "a2a+p2p"});
        MOE_CHECK(s.run.cp_comm_type != "a2a+p2p", "--cp-comm-type ", v,
                  " (hierarchical context parallelism) is not built yet: use p2p, all_gather or "
                  "a2a");
      }));
  t.push_back(value("--expert-model-parallel-size", "EP",
                    "parallel.expert_model_parallel_size: the experts split over EP ranks (a "
                    "divisor of --num-experts; ETP x EP must divide the world size, the rest is "
                    "expert data parallelism)",
                    [](S& s, V v) {
                      s.run.parallel.expert_model_parallel_size =
                          parallel_size("--expert-model-parallel-size", v);
                    }));
  t.push_back(value("--expert-tensor-parallel-size", "ETP",
                    "parallel.expert_tensor_parallel_size: each expert's FFN split over ETP ranks "
                    "(a divisor of --moe-ffn-hidden-size; default: --tensor-model-parallel-size)",
                    [](S& s, V v) {
                      s.run.parallel.expert_tensor_parallel_size =
                          parallel_size("--expert-tensor-parallel-size", v);
                    }));
  // Data parallelism (train/data_parallel.h, train/distributed_optimizer.h).
  t.push_back(toggle("--use-distributed-optimizer",
                     "ddp.use_distributed_optimizer: the fp32 masters and Adam moments sharded "
                     "over the data-parallel ranks (ZeRO-1; gradients reduce-scattered, "
                     "parameters all-gathered); one rank: nothing to shard",
                     [](S& s, V) { s.run.ddp.use_distributed_optimizer = true; }));
  t.push_back(toggle("--overlap-grad-reduce",
                     "ddp.overlap_grad_reduce: each gradient bucket's reduction starts during "
                     "the last micro-batch's backward",
                     [](S& s, V) { s.run.ddp.overlap_grad_reduce = true; }));
  t.push_back(toggle("--overlap-param-gather",
                     "ddp.overlap_param_gather: the distributed optimizer's parameter "
                     "all-gathers overlap the next forward (needs --use-distributed-optimizer)",
                     [](S& s, V) { s.run.ddp.overlap_param_gather = true; }));
  t.push_back(
      value("--ddp-bucket-size", "N",
            "ddp.bucket_size: elements per gradient bucket (default: Megatron's "
            "max(40M, 1M x data-parallel size))",
            [](S& s, V v) { s.run.ddp.bucket_size = as_count("--ddp-bucket-size", v, 1); }));
  t.push_back(toggle("--grad-reduce-in-bf16",
                     "ddp.grad_reduce_in_bf16: gradients communicated in bf16 (accumulated and "
                     "applied in fp32)",
                     [](S& s, V) { s.run.ddp.grad_reduce_in_bf16 = true; }));
  t.push_back(toggle("--accumulate-allreduce-grads-in-fp32",
                     "accepted: moecore always accumulates, reduces (unless "
                     "--grad-reduce-in-bf16) and keeps the main gradients in fp32",
                     [](S&, V) {}));
  t.push_back(value(
      "--distributed-backend", "BACKEND",
      "nccl | mpi | local: the backend several ranks meet on (default: local for "
      "one process, nccl with GPUs, else mpi; docs/distributed.md)",
      [](S& s, V v) {
        s.run.distributed.backend = one_of("--distributed-backend", v, {"nccl", "mpi", "local"});
      }));
  t.push_back(value("--distributed-timeout-minutes", "MIN",
                    "rendezvous and collective timeout in minutes (default 10; fractions allowed)",
                    [](S& s, V v) {
                      const double minutes = as_double("--distributed-timeout-minutes", v);
                      MOE_CHECK(minutes > 0, "--distributed-timeout-minutes must be positive, got ",
                                v);
                      s.run.distributed.timeout_minutes = minutes;
                    }));
}

// Batches and length.
void add_batch_flags(std::vector<Entry>& t) {
  using S = ParseState;
  using V = const std::string&;
  t.push_back(value("--seq-length", "S",
                    "train.seq_length (<= --max-position-embeddings; default 128, the default "
                    "run's: Megatron has none)",
                    [](S& s, V v) { s.run.train.seq_length = as_count("--seq-length", v, 1); }));
  t.push_back(value(
      "--micro-batch-size", "B",
      "train.micro_batch_size (default 8, the default run's: Megatron has none)",
      [](S& s, V v) { s.run.train.micro_batch_size = as_count("--micro-batch-size", v, 1); }));
  t.push_back(value(
      "--global-batch-size", "B",
      "train.global_batch_size (a multiple of --micro-batch-size x the data-parallel size; "
      "default: --micro-batch-size x the data-parallel size when only that is given)",
      [](S& s, V v) { s.run.train.global_batch_size = as_count("--global-batch-size", v, 1); }));
  t.push_back(value("--train-iters", "N",
                    "train.train_iters (default 500, the default run's: Megatron has none; 0: no "
                    "training, --save saves the initial model; not with --train-samples)",
                    [](S& s, V v) { s.run.train.train_iters = as_count("--train-iters", v, 0); }));
  t.push_back(
      value("--train-samples", "N",
            "train.train_samples: sample-based training (Megatron's; not with "
            "--train-iters): N / --global-batch-size iterations (the remainder is not "
            "trained), the lr and weight-decay schedules counted in samples "
            "(--lr-decay-samples, --lr-warmup-samples, --lr-wsd-decay-samples)",
            [](S& s, V v) { s.run.train.train_samples = as_count("--train-samples", v, 1); }));
  t.push_back(
      value("--seed", "SEED", "train.seed: the model's initialisation and the data order",
            [](S& s, V v) { s.run.train.seed = static_cast<uint64_t>(as_count("--seed", v, 0)); }));
  t.push_back(toggle("--calculate-per-token-loss",
                     "train.calculate_per_token_loss: the lm loss is the sum over the global "
                     "batch's tokens / their count (not the mean of the micro-batch means); not "
                     "with --mtp-num-layers",
                     [](S& s, V) { s.run.train.calculate_per_token_loss = true; }));
}

// Learning rate and weight decay (lr_schedule.h).
void add_schedule_flags(std::vector<Entry>& t) {
  using S = ParseState;
  using V = const std::string&;
  t.push_back(value("--lr", "LR",
                    "schedule.lr (the peak; required when iterations run: Megatron has no default)",
                    [](S& s, V v) { s.run.train.schedule.lr = as_double("--lr", v); }));
  t.push_back(value("--min-lr", "LR", "schedule.min_lr (default 0)",
                    [](S& s, V v) { s.run.train.schedule.min_lr = as_double("--min-lr", v); }));
  t.push_back(value("--lr-decay-style", "STYLE",
                    "constant | linear | cosine | inverse-square-root | WSD", [](S& s, V v) {
                      s.run.train.schedule.decay_style =
                          one_of("--lr-decay-style", v,
                                 {"constant", "linear", "cosine", "inverse-square-root", "WSD"});
                    }));
  t.push_back(value(
      "--lr-decay-iters", "N",
      "schedule.decay_iters (default: --train-iters; with --train-iters only)",
      [](S& s, V v) { s.run.train.schedule.decay_iters = as_count("--lr-decay-iters", v, 0); }));
  t.push_back(value("--lr-decay-samples", "N",
                    "schedule.decay_samples (default: --train-samples; with --train-samples only)",
                    [](S& s, V v) {
                      s.run.train.schedule.decay_samples = as_count("--lr-decay-samples", v, 1);
                    }));
  t.push_back(value(
      "--lr-warmup-iters", "N", "schedule.warmup_iters (default 0; with --train-iters only)",
      [](S& s, V v) { s.run.train.schedule.warmup_iters = as_count("--lr-warmup-iters", v, 0); }));
  t.push_back(value("--lr-warmup-samples", "N",
                    "schedule.warmup_samples (default 0; with --train-samples only)",
                    [](S& s, V v) {
                      s.run.train.schedule.warmup_samples = as_count("--lr-warmup-samples", v, 0);
                    }));
  t.push_back(value("--lr-warmup-fraction", "X",
                    "schedule.warmup_fraction: the warm-up is X x the decay iterations or samples "
                    "(not rounded, as Megatron's; not with --lr-warmup-iters / "
                    "--lr-warmup-samples)",
                    [](S& s, V v) {
                      const double x = as_double("--lr-warmup-fraction", v);
                      MOE_CHECK(x >= 0.0 && x <= 1.0,
                                "--lr-warmup-fraction must be in [0, 1], got ", v);
                      s.run.train.schedule.warmup_fraction = x;
                    }));
  t.push_back(value("--lr-warmup-init", "LR", "schedule.warmup_init", [](S& s, V v) {
    s.run.train.schedule.warmup_init = as_double("--lr-warmup-init", v);
  }));
  t.push_back(value(
      "--lr-wsd-decay-style", "STYLE", "linear | cosine | exponential | minus_sqrt", [](S& s, V v) {
        s.run.train.schedule.wsd_decay_style =
            one_of("--lr-wsd-decay-style", v, {"linear", "cosine", "exponential", "minus_sqrt"});
      }));
  t.push_back(value("--lr-wsd-decay-iters", "N",
                    "schedule.wsd_decay_iters: WSD's annealing (with --train-iters only)",
                    [](S& s, V v) {
                      s.run.train.schedule.wsd_decay_iters = as_count("--lr-wsd-decay-iters", v, 0);
                    }));
  t.push_back(value(
      "--lr-wsd-decay-samples", "N",
      "schedule.wsd_decay_samples: WSD's annealing (with --train-samples only)", [](S& s, V v) {
        s.run.train.schedule.wsd_decay_samples = as_count("--lr-wsd-decay-samples", v, 0);
      }));
  t.push_back(value("--weight-decay", "WD", "start and end weight decay", [](S& s, V v) {
    const double wd = as_double("--weight-decay", v);
    s.run.train.schedule.start_weight_decay = s.run.train.schedule.end_weight_decay = wd;
  }));
  t.push_back(value("--start-weight-decay", "WD", "schedule.start_weight_decay", [](S& s, V v) {
    s.run.train.schedule.start_weight_decay = as_double("--start-weight-decay", v);
    s.start_wd_given = true;
  }));
  t.push_back(value("--end-weight-decay", "WD", "schedule.end_weight_decay", [](S& s, V v) {
    s.run.train.schedule.end_weight_decay = as_double("--end-weight-decay", v);
    s.end_wd_given = true;
  }));
  t.push_back(
      value("--weight-decay-incr-style", "STYLE", "constant | linear | cosine", [](S& s, V v) {
        s.run.train.schedule.weight_decay_incr_style =
            one_of("--weight-decay-incr-style", v, {"constant", "linear", "cosine"});
      }));
}

// Optimizer (optimizer.h).
void add_optimizer_flags(std::vector<Entry>& t) {
  using S = ParseState;
  using V = const std::string&;
  t.push_back(value("--optimizer", "adam", "accepted: adam only (AdamW, decoupled weight decay)",
                    [](S&, V v) { one_of("--optimizer", v, {"adam"}); }));
  t.push_back(value("--clip-grad", "NORM", "optimizer.clip_grad (0: off)", [](S& s, V v) {
    s.run.train.optimizer.clip_grad = as_double("--clip-grad", v);
  }));
  t.push_back(value("--adam-beta1", "B1", "optimizer.beta1",
                    [](S& s, V v) { s.run.train.optimizer.beta1 = as_double("--adam-beta1", v); }));
  t.push_back(value("--adam-beta2", "B2", "optimizer.beta2",
                    [](S& s, V v) { s.run.train.optimizer.beta2 = as_double("--adam-beta2", v); }));
  t.push_back(value("--adam-eps", "EPS", "optimizer.eps",
                    [](S& s, V v) { s.run.train.optimizer.eps = as_double("--adam-eps", v); }));
  t.push_back(toggle("--use-precision-aware-optimizer",
                     "allows --exp-avg-dtype / --exp-avg-sq-dtype bf16",
                     [](S& s, V) { s.precision_aware = true; }));
  t.push_back(
      value("--exp-avg-dtype", "DTYPE", "optimizer.exp_avg_dtype: fp32 | bf16", [](S& s, V v) {
        s.exp_avg_dtype = one_of("--exp-avg-dtype", v, {"fp32", "bf16"});
      }));
  t.push_back(value("--exp-avg-sq-dtype", "DTYPE", "optimizer.exp_avg_sq_dtype: fp32 | bf16",
                    [](S& s, V v) {
                      s.exp_avg_sq_dtype = one_of("--exp-avg-sq-dtype", v, {"fp32", "bf16"});
                    }));
}

// Precision and device.
void add_precision_flags(std::vector<Entry>& t) {
  using S = ParseState;
  using V = const std::string&;
  t.push_back(toggle("--bf16",
                     "bf16 parameters and activations, fp32 master weights and "
                     "gradients (GPU only); default f32",
                     [](S& s, V) { s.run.bf16 = true; }));
  t.push_back(refused("--fp16", "", "not supported by this build: use --bf16"));
  t.push_back(toggle("--cpu", "moecore: run on the CPU even when a GPU is present",
                     [](S& s, V) { s.run.cpu = true; }));

  // NaN handling.
  t.push_back(toggle("--check-for-nan-in-loss-and-grad",
                     "stop on a NaN/Inf loss or gradient (= --nan-action stop; Megatron's default)",
                     [](S& s, V) { s.nan_check = true; }));
  t.push_back(toggle("--no-check-for-nan-in-loss-and-grad",
                     "no stop on a NaN/Inf loss or gradient: moecore then drops that update "
                     "(= --nan-action skip) rather than applying it",
                     [](S& s, V) { s.nan_action = "skip"; }));
  t.push_back(value("--nan-action", "ACTION",
                    "moecore: stop (the default, as Megatron checks for NaN) | skip (drop the "
                    "update; the default run's)",
                    [](S& s, V v) {
                      s.nan_action = one_of("--nan-action", v, {"skip", "stop"});
                    }));

  // CUDA graphs (Megatron's names): per-layer graphs, or the whole forward and backward of a
  // step as one graph.
  t.push_back(value(
      "--cuda-graph-impl", "IMPL",
      "none | local (train.cuda_graph_impl: per-layer graphs of the --cuda-graph-modules blocks, "
      "captured after the warm-up steps, then replayed; several ranks) | full_iteration (every "
      "micro-batch's forward and backward as one CUDA graph; one GPU)",
      [](S& s, V v) {
        const std::string impl = one_of("--cuda-graph-impl", v,
                                        {"none", "local", "transformer_engine", "full_iteration"});
        MOE_CHECK(impl != "transformer_engine",
                  "--cuda-graph-impl transformer_engine: moecore has no Transformer Engine; "
                  "--cuda-graph-impl local captures the same per-layer graphs");
        s.run.train.cuda_graph_impl = impl == "full_iteration" ? CudaGraphImpl::full_iteration
                                      : impl == "local"        ? CudaGraphImpl::local
                                                               : CudaGraphImpl::none;
      }));
  for (const char* name : {"--cuda-graph-modules", "--cuda-graph-scope"})
    t.push_back(value(name, "M ...",
                      "with --cuda-graph-impl local: attn, mlp (dense layers), moe (MoE layers); "
                      "none or full: the whole layer (moe_router and moe_preprocess are not "
                      "built); full_iteration (the deprecated scope) = --cuda-graph-impl "
                      "full_iteration",
                      [name](S& s, V v) {
                        const std::vector<std::string> modules = split_values(v);
                        if (modules.size() == 1 && modules[0] == "full_iteration") {
                          s.run.train.cuda_graph_impl = CudaGraphImpl::full_iteration;
                          return;
                        }
                        s.run.train.cuda_graph_modules =
                            nn::parse_layer_graph_modules(modules, name);
                      }));
  t.push_back(value("--cuda-graph-warmup-steps", "N",
                    "eager steps before the capture (default 3; at least 1: the first step "
                    "builds the kernels' plans and the gradients)",
                    [](S& s, V v) {
                      s.run.train.cuda_graph_warmup_steps =
                          as_count("--cuda-graph-warmup-steps", v, 1);
                    }));
}

}  // namespace moe::train::flags
