// Shared pieces of the MoE layer tests: small configurations, the scalar objective
// L = <y, R> + aux_loss + z_loss, and the expert-parallel rank grid of a test world.
#pragma once

#include <memory>
#include <mutex>
#include <string>
#include <vector>

#include "common/check.h"
#include "moe/dist/local_backend.h"
#include "moe/dist/process_group.h"
#include "moe/nn/moe_layer.h"

namespace moe::test {

// A small layer in `dtype` (router in fp64 when dtype is f64) with softmax top-2 routing and an
// aux loss; tests flip the fields they exercise.
inline nn::MoEConfig small_moe_config(DType dtype = DType::f64) {
  nn::MoEConfig c;
  c.hidden_size = 6;
  c.num_experts = 4;
  c.moe_ffn_hidden_size = 4;
  c.moe_router_topk = 2;
  c.moe_aux_loss_coeff = 1e-2;
  c.params_dtype = dtype;
  c.moe_router_dtype = dtype == DType::f64 ? nn::RouterDType::fp64 : nn::RouterDType::fp32;
  c.init_method_std = 0.5;  // large enough that routing is far from ties
  c.seed = 7;
  return c;
}

// The objective whose gradient MoELayer::backward(dy = R, loss_scale = 1) computes.
inline double moe_objective(nn::MoELayer& layer, const Tensor& x, const Tensor& weights) {
  nn::MoEContext ctx;
  const Tensor y = layer.forward(x, ctx);
  double loss = dot(y, weights);
  if (ctx.router.aux_loss.defined()) loss += ctx.router.aux_loss.item();
  if (ctx.router.z_loss.defined()) loss += ctx.router.z_loss.item();
  return loss;
}

// The groups of a world of EP x ETP ranks (rank = etp_rank + ETP * ep_rank); every rank holds
// its own tokens (they are data-parallel in the dense layers). Collective: every rank calls it.
inline nn::MoEGroups expert_groups(const std::shared_ptr<dist::ProcessGroup>& world, int ep,
                                   int etp) {
  std::vector<std::vector<int>> ep_lists(static_cast<size_t>(etp));
  std::vector<std::vector<int>> etp_lists(static_cast<size_t>(ep));
  std::vector<int> all;
  for (int p = 0; p < ep; ++p) {
    for (int q = 0; q < etp; ++q) {
      const int rank = q + etp * p;
      ep_lists[static_cast<size_t>(q)].push_back(rank);
      etp_lists[static_cast<size_t>(p)].push_back(rank);
      all.push_back(rank);
    }
  }
  nn::MoEGroups g;
  g.ep = world->split(ep_lists);
  g.etp = world->split(etp_lists);
  g.tp_ep = world->split({all});
  g.tp_dp_cp = g.tp_ep;
  g.dp_size = ep * etp;  // every rank a data-parallel replica of the dense layers
  return g;
}

// EP invariance: `base` (EP = ETP = 1) run on one rank over every rank's tokens in turn is the
// reference; then ep x etp ranks of the Local backend (threads, on `device`) each run their own
// tokens. Every rank's y and dx must match the reference's for its tokens, its expert-weight
// gradients the matching shard of the reference's, the router gradient the reference's once
// summed over ranks (as data-parallel reduction will), and its initial weights exactly the
// reference's shard. Failures are reported per rank.
inline void check_expert_parallel_invariance(const nn::MoEConfig& base, int ep, int etp,
                                             int64_t tokens, Device device, double tol) {
  const uint64_t seed = fresh_seed();
  SCOPED_TRACE(seed);
  const int world = ep * etp;
  const DType dtype = base.params_dtype;
  std::vector<Tensor> xs, dys;
  for (int r = 0; r < world; ++r) {
    xs.push_back(random_normal({tokens, base.hidden_size}, dtype, seed + 2 * r, device));
    dys.push_back(random_normal({tokens, base.hidden_size}, dtype, seed + 2 * r + 1, device));
  }
  nn::MoELayer reference(base, device);
  std::vector<Tensor> ref_y, ref_dx;
  for (int r = 0; r < world; ++r) {
    nn::MoEContext ctx;
    ref_y.push_back(reference.forward(xs[r], ctx));
    ref_dx.push_back(reference.backward(dys[r], ctx));
  }
  nn::MoEConfig parallel = base;
  parallel.expert_model_parallel_size = ep;
  parallel.expert_tensor_parallel_size = etp;
  std::mutex mutex;
  std::vector<std::string> failures;
  dist::run_local(world, [&](std::shared_ptr<dist::ProcessGroup> group) {
    const int rank = group->rank();
    const nn::MoEGroups groups = expert_groups(group, ep, etp);
    nn::MoELayer layer(parallel, device, groups);
    nn::MoEContext ctx;
    const Tensor y = layer.forward(xs[rank], ctx);
    const Tensor dx = layer.backward(dys[rank], ctx);
    Tensor router_grad = layer.router.weight.grad_value().clone();
    group->all_reduce(router_grad);
    // This rank's expected shards: the reference's tensors sliced as the weights are.
    nn::Experts expected(parallel, Device::cpu(), groups.ep_rank(), groups.etp_rank());
    expected.load_full(reference.experts.fc1.grad_value(), reference.experts.fc2.grad_value());
    nn::Experts initial(parallel, Device::cpu(), groups.ep_rank(), groups.etp_rank());
    initial.load_full(reference.experts.fc1.value, reference.experts.fc2.value);
    std::vector<::testing::AssertionResult> checks = {
        close(layer.experts.fc1.value, initial.fc1.value, 0.0, "initial fc1 shard"),
        close(y, ref_y[rank], tol, "y"),
        close(dx, ref_dx[rank], tol, "dx"),
        close(router_grad, reference.router.weight.grad_value(), tol, "router grad"),
        close(layer.experts.fc1.grad_value(), expected.fc1.value, tol, "fc1 grad"),
        close(layer.experts.fc2.grad_value(), expected.fc2.value, tol, "fc2 grad"),
    };
    std::lock_guard lock(mutex);
    for (auto& c : checks)
      if (!c) failures.push_back("rank " + std::to_string(rank) + ": " + c.message());
  });
  // Shared-expert gradients are per-rank partial sums of the reference's: y and dx cover them.
  for (const std::string& f : failures) ADD_FAILURE() << f;
}

}  // namespace moe::test
