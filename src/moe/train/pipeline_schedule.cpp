#include "moe/train/pipeline_schedule.h"

#include <algorithm>
#include <map>
#include <optional>
#include <sstream>
#include <utility>

#include "moe/core/error.h"

namespace moe::train {

using Kind = PipelineActionKind;

const char* pipeline_action_kind_name(PipelineActionKind kind) {
  switch (kind) {
    case Kind::recv_forward:
      return "recv_forward";
    case Kind::forward:
      return "forward";
    case Kind::send_forward:
      return "send_forward";
    case Kind::recv_backward:
      return "recv_backward";
    case Kind::backward:
      return "backward";
    case Kind::send_backward:
      return "send_backward";
  }
  return "unknown";
}

bool is_p2p(PipelineActionKind kind) {
  return kind != Kind::forward && kind != Kind::backward;
}

std::string describe(const PipelineAction& a) {
  std::ostringstream out;
  out << pipeline_action_kind_name(a.kind) << " mb " << a.microbatch << " chunk " << a.chunk;
  if (is_p2p(a.kind)) {
    const bool sends = a.kind == Kind::send_forward || a.kind == Kind::send_backward;
    out << (sends ? " -> rank " : " <- rank ") << a.peer_rank << " (batch " << a.batch << ")";
  }
  return out.str();
}

namespace {

struct MicrobatchChunk {
  int microbatch;
  int chunk;
};

// Appends compute actions directly and gathers the p2p ops of one Megatron p2p call until
// flush(), which emits them in a fixed order (activations before gradients, each send before
// its receive) under one batch number.
class ScheduleBuilder {
 public:
  ScheduleBuilder(int pp_size, int pp_rank) : pp_(pp_size), rank_(pp_rank) {}

  void compute(Kind kind, MicrobatchChunk mc) {
    MOE_CHECK(pending_.empty(), "pipeline schedule: compute inside an open p2p batch");
    actions_.push_back({kind, mc.microbatch, mc.chunk, -1, -1});
  }
  void p2p(Kind kind, MicrobatchChunk mc) {
    const bool to_next = kind == Kind::send_forward || kind == Kind::recv_backward;
    const int peer = to_next ? (rank_ + 1) % pp_ : (rank_ - 1 + pp_) % pp_;
    pending_.push_back({kind, mc.microbatch, mc.chunk, peer, next_batch_});
  }
  void alone(Kind kind, MicrobatchChunk mc) {  // a p2p call of one op
    p2p(kind, mc);
    flush();
  }
  void flush() {
    if (pending_.empty()) return;
    std::stable_sort(pending_.begin(), pending_.end(),
                     [](const auto& x, const auto& y) { return order(x.kind) < order(y.kind); });
    actions_.insert(actions_.end(), pending_.begin(), pending_.end());
    pending_.clear();
    ++next_batch_;
  }
  std::vector<PipelineAction> take() {
    flush();
    return std::move(actions_);
  }

 private:
  static int order(Kind k) {
    switch (k) {
      case Kind::send_forward:
        return 0;
      case Kind::recv_forward:
        return 1;
      case Kind::send_backward:
        return 2;
      case Kind::recv_backward:
        return 3;
      default:
        return 4;
    }
  }

  int pp_;
  int rank_;
  int next_batch_ = 0;
  std::vector<PipelineAction> actions_;
  std::vector<PipelineAction> pending_;
};

// Megatron's forward_backward_pipelining_without_interleaving (and, for pp 1, the
// no-pipelining order, which it equals).
std::vector<PipelineAction> one_f_one_b(int pp, int rank, int m_count, bool forward_only) {
  ScheduleBuilder b(pp, rank);
  const bool first = rank == 0;
  const bool last = rank == pp - 1;
  const int warmup = std::min(pp - rank - 1, m_count);
  const int remaining = m_count - warmup;
  auto mc = [](int m) { return MicrobatchChunk{m, 0}; };

  for (int i = 0; i < warmup; ++i) {
    if (!first) b.alone(Kind::recv_forward, mc(i));
    b.compute(Kind::forward, mc(i));
    if (!last) b.alone(Kind::send_forward, mc(i));
  }
  if (remaining > 0 && !first) b.alone(Kind::recv_forward, mc(warmup));
  for (int i = 0; i < remaining; ++i) {
    const int f = warmup + i;
    const bool last_iteration = i == remaining - 1;
    b.compute(Kind::forward, mc(f));
    if (forward_only) {
      if (!last) b.alone(Kind::send_forward, mc(f));
      if (!last_iteration && !first) b.alone(Kind::recv_forward, mc(f + 1));
      continue;
    }
    if (!last) {  // send_forward_recv_backward
      b.p2p(Kind::send_forward, mc(f));
      b.p2p(Kind::recv_backward, mc(i));
      b.flush();
    }
    b.compute(Kind::backward, mc(i));
    if (!first) {  // send_backward_recv_forward, or send_backward alone after the last one
      b.p2p(Kind::send_backward, mc(i));
      if (!last_iteration) b.p2p(Kind::recv_forward, mc(f + 1));
      b.flush();
    }
  }
  if (!forward_only) {
    for (int i = remaining; i < m_count; ++i) {
      if (!last) b.alone(Kind::recv_backward, mc(i));
      b.compute(Kind::backward, mc(i));
      if (!first) b.alone(Kind::send_backward, mc(i));
    }
  }
  return b.take();
}

// Megatron's get_schedule_table: micro-batch groups of `group` (the last one holds the rest),
// each run through chunk 0, then chunk 1, ...
std::vector<MicrobatchChunk> schedule_table(int m_count, int vpp, int group) {
  std::vector<MicrobatchChunk> table;
  for (int begin = 0; begin < m_count; begin += group) {
    const int end = begin + group >= m_count ? m_count : begin + group;
    for (int c = 0; c < vpp; ++c)
      for (int m = begin; m < end; ++m) table.push_back({m, c});
  }
  return table;
}

// Megatron's forward_backward_pipelining_with_interleaving (the batched, non-overlapped p2p
// calls: one batch per send_forward_recv_forward / send_forward_backward_recv_forward_backward /
// send_backward_recv_backward).
std::vector<PipelineAction> interleaved(int pp, int rank, int m_count, int vpp, int group,
                                        bool forward_only) {
  ScheduleBuilder b(pp, rank);
  const bool first = rank == 0;
  const bool last = rank == pp - 1;
  const std::vector<MicrobatchChunk> table = schedule_table(m_count, vpp, group);
  const int total = m_count * vpp;
  const int warmup =
      forward_only ? total : std::min(total, 2 * (pp - rank - 1) + (vpp - 1) * group);
  const int remaining = total - warmup;
  const bool all_warmup = warmup == total;

  auto fwd = [&](int k) { return table[k]; };
  auto bwd = [&](int k) { return MicrobatchChunk{table[k].microbatch, vpp - 1 - table[k].chunk}; };
  // The input received after forward step k (Megatron's recv_tensor_from_previous_stage): the
  // next forward's on most ranks; on rank 0 the output of the last rank's forward k - (pp - 1)
  // (which runs pp - 1 steps behind), unless that was the model's last stage.
  auto input_after = [&](int k) -> std::optional<MicrobatchChunk> {
    if (k == total - 1) return std::nullopt;
    if (!first) return fwd(k + 1);
    if (k < pp - 1) return std::nullopt;
    const MicrobatchChunk src = fwd(k - (pp - 1));
    if (src.chunk == vpp - 1) return std::nullopt;
    return MicrobatchChunk{src.microbatch, src.chunk + 1};
  };
  // Mirror image for gradients: the last rank receives rank 0's backward k - (pp - 1).
  auto grad_after = [&](int k) -> std::optional<MicrobatchChunk> {
    if (k == total - 1) return std::nullopt;
    if (!last) return bwd(k + 1);
    if (k < pp - 1) return std::nullopt;
    const MicrobatchChunk src = bwd(k - (pp - 1));
    if (src.chunk == 0) return std::nullopt;
    return MicrobatchChunk{src.microbatch, src.chunk - 1};
  };
  auto send_output = [&](int k) {
    if (!(last && fwd(k).chunk == vpp - 1)) b.p2p(Kind::send_forward, fwd(k));
  };
  auto send_grad = [&](int k) {
    if (!(first && bwd(k).chunk == 0)) b.p2p(Kind::send_backward, bwd(k));
  };

  if (!first) b.alone(Kind::recv_forward, fwd(0));
  for (int k = 0; k < warmup; ++k) {
    b.compute(Kind::forward, fwd(k));
    send_output(k);
    if (auto in = input_after(k)) b.p2p(Kind::recv_forward, *in);
    // The last warm-up step also receives the first backward's gradient.
    if (k == warmup - 1 && !forward_only && !all_warmup && !last)
      b.p2p(Kind::recv_backward, bwd(0));
    b.flush();
  }
  for (int k = 0; k < remaining; ++k) {
    const int f = warmup + k;
    b.compute(Kind::forward, fwd(f));
    b.compute(Kind::backward, bwd(k));
    send_output(f);
    send_grad(k);
    if (auto in = input_after(f)) b.p2p(Kind::recv_forward, *in);
    if (auto grad = grad_after(k)) b.p2p(Kind::recv_backward, *grad);
    b.flush();
  }
  if (!forward_only) {
    if (all_warmup && !last) b.alone(Kind::recv_backward, bwd(0));
    for (int k = remaining; k < total; ++k) {
      b.compute(Kind::backward, bwd(k));
      send_grad(k);
      if (auto grad = grad_after(k)) b.p2p(Kind::recv_backward, *grad);
      b.flush();
    }
  }
  return b.take();
}

}  // namespace

std::vector<PipelineAction> pipeline_schedule(int pp_size, int pp_rank, int num_microbatches,
                                              int vpp_size, int microbatch_group_size,
                                              bool forward_only) {
  MOE_CHECK(pp_size >= 1, "pipeline schedule: --pipeline-model-parallel-size must be >= 1, got ",
            pp_size);
  MOE_CHECK(pp_rank >= 0 && pp_rank < pp_size, "pipeline schedule: pipeline rank ", pp_rank,
            " outside 0..", pp_size - 1);
  MOE_CHECK(num_microbatches >= 1,
            "pipeline schedule: the number of micro-batches must be >= 1, "
            "got ",
            num_microbatches);
  MOE_CHECK(vpp_size >= 1, "pipeline schedule: the virtual pipeline size must be >= 1, got ",
            vpp_size);
  if (vpp_size == 1) return one_f_one_b(pp_size, pp_rank, num_microbatches, forward_only);

  const int group = microbatch_group_size <= 0 ? pp_size : microbatch_group_size;
  MOE_CHECK(pp_size > 1, "pipeline schedule: the interleaved schedule (virtual pipeline size ",
            vpp_size, ") needs --pipeline-model-parallel-size > 1");
  MOE_CHECK(
      group >= pp_size && group <= num_microbatches,
      "pipeline schedule: with virtual pipeline size ", vpp_size,
      " the micro-batch group size per virtual stage (--microbatch-group-size-per-virtual-"
      "pipeline-stage, default the pipeline size) must lie in [pipeline size ",
      pp_size, ", micro-batches ", num_microbatches, "], got ", group,
      group > num_microbatches ? " (the number of micro-batches must be >= the group size)" : "");
  const int final_group = num_microbatches % group;
  MOE_CHECK(final_group == 0 || final_group >= pp_size, "pipeline schedule: the micro-batches ",
            num_microbatches, " modulo the group size ", group, " leave a last group of ",
            final_group, ", which must be 0 or >= the pipeline size ", pp_size,
            " (a shorter group leaves dependency bubbles; Megatron refuses it)");
  return interleaved(pp_size, pp_rank, num_microbatches, vpp_size, group, forward_only);
}

std::vector<std::vector<PipelineAction>> pipeline_schedules(int pp_size, int num_microbatches,
                                                            int vpp_size, int microbatch_group_size,
                                                            bool forward_only) {
  MOE_CHECK(pp_size >= 1, "pipeline schedule: --pipeline-model-parallel-size must be >= 1, got ",
            pp_size);
  std::vector<std::vector<PipelineAction>> all;
  for (int r = 0; r < pp_size; ++r)
    all.push_back(pipeline_schedule(pp_size, r, num_microbatches, vpp_size, microbatch_group_size,
                                    forward_only));
  return all;
}

// ---- running all ranks' lists together ----------------------------------------------------

namespace {

bool is_send(Kind k) {
  return k == Kind::send_forward || k == Kind::send_backward;
}

// The ops of one direction between two ranks, in the order each side posted them: the n-th
// send meets the n-th receive.
struct Channel {
  std::vector<std::pair<int, int>> sends;  // (rank, action index)
  std::vector<std::pair<int, int>> recvs;
};

std::string at(int rank, int index, const PipelineAction& a) {
  std::ostringstream out;
  out << "rank " << rank << " action " << index << " (" << describe(a) << ")";
  return out.str();
}

}  // namespace

std::vector<std::vector<PipelineActionTime>> run_pipeline_schedules(
    const std::vector<std::vector<PipelineAction>>& schedules, double forward_time,
    double backward_time, double p2p_time) {
  const int pp = static_cast<int>(schedules.size());
  MOE_CHECK(pp >= 1, "pipeline schedules: no ranks");
  std::vector<std::vector<PipelineActionTime>> times(pp);
  for (int r = 0; r < pp; ++r) times[r].resize(schedules[r].size());

  std::map<std::pair<int, int>, Channel> channels;  // (sender, receiver)
  struct Slot {
    Channel* channel;
    bool send;
    int n;  // position on the channel
  };
  std::vector<std::vector<Slot>> slots(pp);  // per rank: the ops of the posted batch
  std::vector<size_t> pos(pp, 0), batch_end(pp, 0);
  std::vector<double> clock(pp, 0.0);
  std::vector<bool> posted(pp, false);

  // The n-th send and the n-th receive of a channel must be the two ends of one tensor.
  auto check_pair = [&](const std::pair<int, int>& s, const std::pair<int, int>& rcv) {
    const PipelineAction& a = schedules[s.first][s.second];
    const PipelineAction& b = schedules[rcv.first][rcv.second];
    const bool forward = a.kind == Kind::send_forward;
    const int send_stage = a.chunk * pp + s.first;
    const int recv_stage = b.chunk * pp + rcv.first;
    const bool ok = b.kind == (forward ? Kind::recv_forward : Kind::recv_backward) &&
                    a.microbatch == b.microbatch && recv_stage == send_stage + (forward ? 1 : -1);
    MOE_CHECK(ok, "pipeline schedules: ", at(s.first, s.second, a), " meets ",
              at(rcv.first, rcv.second, b), " (the sends and receives between rank ", s.first,
              " and rank ", rcv.first, " pair up in the order posted; expected ",
              forward ? "recv_forward" : "recv_backward", " mb ", a.microbatch, " of stage ",
              send_stage + (forward ? 1 : -1), ")");
  };

  for (;;) {
    bool progress = false;
    bool all_done = true;
    for (int r = 0; r < pp; ++r) {
      const auto& list = schedules[r];
      while (pos[r] < list.size()) {
        const PipelineAction& a = list[pos[r]];
        if (!is_p2p(a.kind)) {
          const double d = a.kind == Kind::forward ? forward_time : backward_time;
          times[r][pos[r]] = {clock[r], clock[r] + d};
          clock[r] += d;
          ++pos[r];
          progress = true;
          continue;
        }
        if (!posted[r]) {  // post the whole batch: adjacent p2p actions with its number
          size_t e = pos[r] + 1;
          while (a.batch >= 0 && e < list.size() && is_p2p(list[e].kind) &&
                 list[e].batch == a.batch)
            ++e;
          batch_end[r] = e;
          slots[r].clear();
          for (size_t i = pos[r]; i < e; ++i) {
            const PipelineAction& op = list[i];
            const int idx = static_cast<int>(i);
            MOE_CHECK(op.peer_rank >= 0 && op.peer_rank < pp && op.peer_rank != r,
                      "pipeline schedules: ", at(r, idx, op), " names no other rank of the ", pp,
                      "-rank pipeline");
            const bool send = is_send(op.kind);
            Channel& ch = channels[send ? std::pair{r, op.peer_rank} : std::pair{op.peer_rank, r}];
            auto& mine = send ? ch.sends : ch.recvs;
            const auto& theirs = send ? ch.recvs : ch.sends;
            const int n = static_cast<int>(mine.size());
            mine.push_back({r, idx});
            if (n < static_cast<int>(theirs.size()))
              send ? check_pair(mine[n], theirs[n]) : check_pair(theirs[n], mine[n]);
            slots[r].push_back({&ch, send, n});
            times[r][i].start = clock[r];
          }
          posted[r] = true;
          progress = true;
        }
        bool matched = true;
        double end = clock[r];
        for (size_t i = 0; i < slots[r].size(); ++i) {
          const Slot& s = slots[r][i];
          const auto& theirs = s.send ? s.channel->recvs : s.channel->sends;
          if (s.n >= static_cast<int>(theirs.size())) {
            matched = false;
            break;
          }
          const auto [pr, pi] = theirs[s.n];
          const double done = std::max(times[r][pos[r] + i].start, times[pr][pi].start) + p2p_time;
          times[r][pos[r] + i].end = done;
          end = std::max(end, done);
        }
        if (!matched) break;
        clock[r] = end;
        pos[r] = batch_end[r];
        posted[r] = false;
        progress = true;
      }
      if (pos[r] < list.size()) all_done = false;
    }
    if (all_done) break;
    if (!progress) {
      std::ostringstream out;
      out << "pipeline schedules deadlock:";
      for (int r = 0; r < pp; ++r) {
        if (pos[r] >= schedules[r].size()) {
          out << " rank " << r << " has finished;";
          continue;
        }
        for (size_t i = 0; i < slots[r].size(); ++i) {
          const Slot& s = slots[r][i];
          const auto& theirs = s.send ? s.channel->recvs : s.channel->sends;
          if (s.n >= static_cast<int>(theirs.size())) {
            const int idx = static_cast<int>(pos[r] + i);
            out << " " << at(r, idx, schedules[r][idx]) << " waits for its partner;";
            break;
          }
        }
      }
      MOE_FAIL(out.str());
    }
  }
  return times;
}

// ---- the checker ----------------------------------------------------------------------------

void check_pipeline_schedules(const std::vector<std::vector<PipelineAction>>& schedules,
                              int num_microbatches, int vpp_size, bool forward_only) {
  const int pp = static_cast<int>(schedules.size());
  const int v = vpp_size;
  const int m_count = num_microbatches;
  MOE_CHECK(pp >= 1 && v >= 1 && m_count >= 1, "check_pipeline_schedules: ", pp, " ranks, ", v,
            " chunks, ", m_count, " micro-batches");
  const int stages = pp * v;

  // Per rank and (micro-batch, chunk): where each kind of action sits (-1: absent).
  constexpr int kKinds = 6;
  for (int r = 0; r < pp; ++r) {
    const auto& list = schedules[r];
    std::vector<int> where(static_cast<size_t>(m_count) * v * kKinds, -1);
    auto slot = [&](int m, int c, Kind k) -> int& {
      return where[(static_cast<size_t>(m) * v + c) * kKinds + static_cast<int>(k)];
    };
    std::map<int, int> batch_last;  // batch number -> index of its last action so far
    for (int i = 0; i < static_cast<int>(list.size()); ++i) {
      const PipelineAction& a = list[i];
      MOE_CHECK(static_cast<int>(a.kind) >= 0 && static_cast<int>(a.kind) < kKinds,
                "pipeline schedules: rank ", r, " action ", i, " has an unknown kind");
      MOE_CHECK(a.microbatch >= 0 && a.microbatch < m_count && a.chunk >= 0 && a.chunk < v,
                "pipeline schedules: ", at(r, i, a), " is outside ", m_count, " micro-batches x ",
                v, " chunks");
      const int stage = a.chunk * pp + r;
      if (is_p2p(a.kind)) {
        const bool to_next = a.kind == Kind::send_forward || a.kind == Kind::recv_backward;
        const int peer = to_next ? (r + 1) % pp : (r - 1 + pp) % pp;
        MOE_CHECK(a.peer_rank == peer, "pipeline schedules: ", at(r, i, a), " talks to rank ",
                  a.peer_rank, " but a ", pipeline_action_kind_name(a.kind), " of rank ", r,
                  " goes to rank ", peer);
        MOE_CHECK(!(to_next && stage == stages - 1) && !(!to_next && stage == 0),
                  "pipeline schedules: ", at(r, i, a), " on the ", stage == 0 ? "first" : "last",
                  " virtual stage, which has no neighbour there");
        MOE_CHECK(a.batch >= 0, "pipeline schedules: ", at(r, i, a), " has no batch number");
        auto it = batch_last.find(a.batch);
        MOE_CHECK(it == batch_last.end() || it->second == i - 1,
                  "pipeline schedules: ", at(r, i, a), " belongs to batch ", a.batch,
                  " whose earlier actions end at ", it == batch_last.end() ? -1 : it->second,
                  ": a batch must be adjacent");
        batch_last[a.batch] = i;
        MOE_CHECK(!forward_only || (a.kind != Kind::recv_backward && a.kind != Kind::send_backward),
                  "pipeline schedules: ", at(r, i, a), " in a forward-only schedule");
      } else {
        MOE_CHECK(a.peer_rank == -1 && a.batch == -1, "pipeline schedules: ", at(r, i, a),
                  " is compute but has a peer rank ", a.peer_rank, " / batch ", a.batch);
        MOE_CHECK(!forward_only || a.kind == Kind::forward, "pipeline schedules: ", at(r, i, a),
                  " in a forward-only schedule");
      }
      int& s = slot(a.microbatch, a.chunk, a.kind);
      MOE_CHECK(s < 0, "pipeline schedules: ", at(r, i, a), " repeats action ", s, " of rank ", r);
      s = i;
    }
    for (int m = 0; m < m_count; ++m) {
      for (int c = 0; c < v; ++c) {
        const int stage = c * pp + r;
        const int f = slot(m, c, Kind::forward);
        MOE_CHECK(f >= 0, "pipeline schedules: rank ", r, " never forwards mb ", m, " chunk ", c);
        auto need = [&](Kind k, bool wanted, bool before, int anchor, const char* anchor_name) {
          const int at_i = slot(m, c, k);
          MOE_CHECK(wanted == (at_i >= 0), "pipeline schedules: rank ", r,
                    wanted ? " lacks " : " has a needless ", pipeline_action_kind_name(k),
                    " of mb ", m, " chunk ", c, " (virtual stage ", stage, " of ", stages, ")");
          if (wanted)
            MOE_CHECK(before ? at_i < anchor : at_i > anchor, "pipeline schedules: rank ", r, "'s ",
                      pipeline_action_kind_name(k), " of mb ", m, " chunk ", c, " (action ", at_i,
                      ") comes ", before ? "after" : "before", " its ", anchor_name, " (action ",
                      anchor, ")");
        };
        const int b = slot(m, c, Kind::backward);
        if (!forward_only) {
          MOE_CHECK(b >= 0, "pipeline schedules: rank ", r, " never backwards mb ", m, " chunk ",
                    c);
          MOE_CHECK(b > f, "pipeline schedules: rank ", r, " backwards mb ", m, " chunk ", c,
                    " (action ", b, ") before forwarding it (action ", f, ")");
        }
        need(Kind::recv_forward, stage > 0, true, f, "forward");
        need(Kind::send_forward, stage < stages - 1, false, f, "forward");
        if (forward_only) continue;
        need(Kind::recv_backward, stage < stages - 1, true, b, "backward");
        need(Kind::send_backward, stage > 0, false, b, "backward");
      }
    }
  }

  // Run them: no deadlock, every send met by its receive; then the data dependence in time.
  const auto times = run_pipeline_schedules(schedules);
  std::vector<double> f_start(static_cast<size_t>(m_count) * stages), f_end(f_start.size()),
      b_start(f_start.size()), b_end(f_start.size());
  for (int r = 0; r < pp; ++r) {
    for (size_t i = 0; i < schedules[r].size(); ++i) {
      const PipelineAction& a = schedules[r][i];
      const size_t k = static_cast<size_t>(a.microbatch) * stages + a.chunk * pp + r;
      if (a.kind == Kind::forward) f_start[k] = times[r][i].start, f_end[k] = times[r][i].end;
      if (a.kind == Kind::backward) b_start[k] = times[r][i].start, b_end[k] = times[r][i].end;
    }
  }
  for (int m = 0; m < m_count; ++m) {
    for (int s = 0; s < stages; ++s) {
      const size_t k = static_cast<size_t>(m) * stages + s;
      MOE_CHECK(s == 0 || f_start[k] >= f_end[k - 1], "pipeline schedules: the forward of mb ", m,
                " on virtual stage ", s, " starts at ", f_start[k], " before that of stage ", s - 1,
                " ends at ", f_end[k - 1]);
      if (forward_only) continue;
      MOE_CHECK(s == stages - 1 || b_start[k] >= b_end[k + 1],
                "pipeline schedules: the backward of mb ", m, " on virtual stage ", s,
                " starts at ", b_start[k], " before that of stage ", s + 1, " ends at ",
                b_end[k + 1]);
      MOE_CHECK(s != stages - 1 || b_start[k] >= f_end[k],
                "pipeline schedules: the backward of mb ", m, " on the last stage starts at ",
                b_start[k], " before its forward ends at ", f_end[k]);
    }
  }
}

}  // namespace moe::train
