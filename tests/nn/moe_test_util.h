// Shared pieces of the MoE layer tests: small configurations, the scalar objective
// L = <y, R> + aux_loss + z_loss, and the expert-parallel rank grid of a test world.
#pragma once

#include <memory>
#include <vector>

#include "common/check.h"
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
  c.moe_router_dtype = dtype == DType::f64 ? "fp64" : "fp32";
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

// The groups of rank `rank` in a world of EP x ETP ranks (rank = etp_rank + ETP * ep_rank);
// every rank holds its own tokens (they are data-parallel in the dense layers).
inline nn::MoEGroups expert_groups(const std::shared_ptr<dist::ProcessGroup>& world, int ep, int etp) {
  const int rank = world->rank(), q = rank % etp, p = rank / etp;
  std::vector<int> ep_ranks, etp_ranks, all;
  for (int r = 0; r < ep; ++r) ep_ranks.push_back(q + etp * r);
  for (int r = 0; r < etp; ++r) etp_ranks.push_back(etp * p + r);
  for (int r = 0; r < ep * etp; ++r) all.push_back(r);
  nn::MoEGroups g;
  g.ep = world->new_subgroup(ep_ranks);
  g.etp = world->new_subgroup(etp_ranks);
  g.tp_ep = world->new_subgroup(all);
  g.tp_dp_cp = g.tp_ep;
  return g;
}

}  // namespace moe::test
