#include "moe/dist/launch_env.h"

#include <cctype>
#include <cstdint>
#include <sstream>

#include "moe/core/error.h"

extern char** environ;

namespace moe::dist {
namespace {

const std::string* lookup(const EnvMap& env, const std::string& name) {
  auto it = env.find(name);
  return it == env.end() ? nullptr : &it->second;
}

// A whole decimal integer (an optional '-', digits), as the variable `name` holds it.
int64_t parse_integer(const std::string& name, const std::string& value) {
  size_t i = value.size() > 0 && value[0] == '-' ? 1 : 0;
  bool ok = i < value.size() && value.size() - i <= 12;
  for (size_t j = i; ok && j < value.size(); ++j)
    ok = std::isdigit(static_cast<unsigned char>(value[j])) != 0;
  MOE_CHECK(ok, name, "='", value, "' is not an integer");
  return std::stoll(value);
}

// A count or index held by `name`: an integer >= min.
int parse_at_least(const std::string& name, const std::string& value, int64_t min) {
  const int64_t x = parse_integer(name, value);
  MOE_CHECK(x >= min && x <= INT32_MAX, name, "=", value, " must be ",
            min == 0 ? "a non-negative integer" : "a positive integer");
  return static_cast<int>(x);
}

// The first of `names` that is set, or nullptr.
const std::string* first_set(const EnvMap& env, std::initializer_list<const char*> names,
                             std::string* which) {
  for (const char* n : names) {
    if (const std::string* v = lookup(env, n)) {
      *which = n;
      return v;
    }
  }
  return nullptr;
}

struct Ids {
  std::string rank, size, local_rank, local_size;  // the variables' names, for messages
};

// rank < size, local rank < local size <= size.
void check_consistent(const LaunchEnv& e, const Ids& ids) {
  MOE_CHECK(e.rank < e.world_size, ids.rank, "=", e.rank, " is not below ", ids.size, "=",
            e.world_size, " (ranks are 0 .. size - 1)");
  MOE_CHECK(e.local_world_size <= e.world_size, ids.local_size, "=", e.local_world_size,
            " exceeds ", ids.size, "=", e.world_size);
  MOE_CHECK(e.local_rank < e.local_world_size, ids.local_rank, "=", e.local_rank, " is not below ",
            ids.local_size, "=", e.local_world_size);
}

LaunchEnv parse_torchrun(const EnvMap& env) {
  LaunchEnv e;
  e.launcher = Launcher::torchrun;
  const std::string* rank = lookup(env, "RANK");
  const std::string* size = lookup(env, "WORLD_SIZE");
  MOE_CHECK(rank && size, rank ? "WORLD_SIZE" : "RANK", " is not set, but ",
            rank ? "RANK" : "WORLD_SIZE", " is: a torchrun-style launch sets both");
  e.rank = parse_at_least("RANK", *rank, 0);
  e.world_size = parse_at_least("WORLD_SIZE", *size, 1);
  Ids ids{"RANK", "WORLD_SIZE", "LOCAL_RANK", "LOCAL_WORLD_SIZE"};
  const std::string* local_rank = lookup(env, "LOCAL_RANK");
  const std::string* local_size = lookup(env, "LOCAL_WORLD_SIZE");
  e.local_rank = local_rank ? parse_at_least("LOCAL_RANK", *local_rank, 0) : e.rank;
  e.local_world_size =
      local_size ? parse_at_least("LOCAL_WORLD_SIZE", *local_size, 1) : e.world_size;
  if (!local_rank) ids.local_rank = "LOCAL_RANK (unset: RANK)";
  if (!local_size) ids.local_size = "LOCAL_WORLD_SIZE (unset: WORLD_SIZE)";
  check_consistent(e, ids);
  return e;
}

LaunchEnv parse_openmpi(const EnvMap& env) {
  LaunchEnv e;
  e.launcher = Launcher::openmpi;
  const Ids ids{"OMPI_COMM_WORLD_RANK", "OMPI_COMM_WORLD_SIZE", "OMPI_COMM_WORLD_LOCAL_RANK",
                "OMPI_COMM_WORLD_LOCAL_SIZE"};
  const std::string* size = lookup(env, ids.size);
  MOE_CHECK(size, ids.size, " is not set, but ", ids.rank, " is");
  e.rank = parse_at_least(ids.rank, *lookup(env, ids.rank), 0);
  e.world_size = parse_at_least(ids.size, *size, 1);
  const std::string* local_rank = lookup(env, ids.local_rank);
  const std::string* local_size = lookup(env, ids.local_size);
  e.local_rank = local_rank ? parse_at_least(ids.local_rank, *local_rank, 0) : e.rank;
  e.local_world_size = local_size ? parse_at_least(ids.local_size, *local_size, 1) : e.world_size;
  check_consistent(e, ids);
  return e;
}

LaunchEnv parse_slurm(const EnvMap& env) {
  LaunchEnv e;
  e.launcher = Launcher::slurm;
  Ids ids{"SLURM_PROCID", "SLURM_NTASKS", "SLURM_LOCALID", "SLURM_NTASKS_PER_NODE"};
  const std::string* size = first_set(env, {"SLURM_NTASKS", "SLURM_NPROCS"}, &ids.size);
  MOE_CHECK(size, "SLURM_PROCID is set but SLURM_NTASKS (or SLURM_NPROCS) is not");
  e.rank = parse_at_least(ids.rank, *lookup(env, ids.rank), 0);
  e.world_size = parse_at_least(ids.size, *size, 1);
  const std::string* local_rank = lookup(env, ids.local_rank);
  e.local_rank = local_rank ? parse_at_least(ids.local_rank, *local_rank, 0) : 0;

  std::string which;
  if (const std::string* per_node = lookup(env, "SLURM_NTASKS_PER_NODE")) {
    // Given to sbatch/srun as --ntasks-per-node: the same on every node (Slurm writes a plain
    // number; a run-length form is read like SLURM_TASKS_PER_NODE's).
    const std::vector<int> counts = expand_slurm_tasks_per_node(*per_node, ids.local_size);
    e.local_world_size = counts.front();
  } else if (const std::string* tasks =
                 first_set(env, {"SLURM_STEP_TASKS_PER_NODE", "SLURM_TASKS_PER_NODE"}, &which)) {
    const std::vector<int> counts = expand_slurm_tasks_per_node(*tasks, which);
    const std::string* node = lookup(env, "SLURM_NODEID");
    const int node_id = node ? parse_at_least("SLURM_NODEID", *node, 0) : 0;
    MOE_CHECK(static_cast<size_t>(node_id) < counts.size(), "SLURM_NODEID=", node_id,
              " has no entry in ", which, "=", *tasks, " (", counts.size(), " nodes)");
    e.local_world_size = counts[static_cast<size_t>(node_id)];
    ids.local_size = which + " at SLURM_NODEID " + std::to_string(node_id);
  } else {
    e.local_world_size = e.world_size;  // nothing says otherwise: one node
    ids.local_size = "SLURM_NTASKS (no SLURM_NTASKS_PER_NODE / SLURM_TASKS_PER_NODE)";
  }
  check_consistent(e, ids);
  return e;
}

// MASTER_ADDR / MASTER_PORT, with Slurm's fallbacks.
void read_master(const EnvMap& env, LaunchEnv& e) {
  if (const std::string* addr = lookup(env, "MASTER_ADDR")) {
    MOE_CHECK(!addr->empty(), "MASTER_ADDR is set but empty");
    e.master_addr = *addr;
  } else if (e.launcher == Launcher::slurm) {
    std::string which;
    if (const std::string* list =
            first_set(env, {"SLURM_STEP_NODELIST", "SLURM_JOB_NODELIST", "SLURM_NODELIST"}, &which))
      e.master_addr = slurm_first_host(*list, which);
  }
  if (const std::string* port = lookup(env, "MASTER_PORT")) {
    const int64_t p = parse_integer("MASTER_PORT", *port);
    MOE_CHECK(p >= 1 && p <= 65535, "MASTER_PORT=", *port, " is not a TCP port (1 .. 65535)");
    e.master_port = static_cast<int>(p);
  } else if (e.launcher == Launcher::slurm) {
    if (const std::string* job = lookup(env, "SLURM_JOB_ID")) {
      const int64_t id = parse_integer("SLURM_JOB_ID", *job);
      MOE_CHECK(id >= 0, "SLURM_JOB_ID=", *job, " must be a non-negative integer");
      e.master_port = static_cast<int>(15000 + id % 20000);
    }
  }
}

bool is_digit(char c) {
  return std::isdigit(static_cast<unsigned char>(c)) != 0;
}

// One item of a bracket: "007" or "001-004" (lo keeps its text for the padding).
struct HostRange {
  std::string lo_text;
  int64_t lo = 0, hi = 0;
  size_t width = 0;  // the padding: the width of lo_text
};

// A hostlist entry: literal text and bracket lists, alternating.
struct HostPattern {
  std::vector<std::string> literals;  // size = brackets.size() + 1
  std::vector<std::vector<HostRange>> brackets;
};

std::string pad(int64_t value, size_t width) {
  std::string s = std::to_string(value);
  if (s.size() < width) s.insert(0, width - s.size(), '0');
  return s;
}

std::vector<HostRange> parse_bracket(const std::string& text, const std::string& list,
                                     const std::string& variable) {
  std::vector<HostRange> items;
  std::stringstream in(text);
  for (std::string item; std::getline(in, item, ',');) {
    const size_t dash = item.find('-');
    const std::string lo = item.substr(0, dash);
    const std::string hi = dash == std::string::npos ? lo : item.substr(dash + 1);
    bool ok = !lo.empty() && !hi.empty() && lo.size() <= 18 && hi.size() <= 18;
    for (char c : lo + hi) ok = ok && is_digit(c);
    MOE_CHECK(ok, variable, "='", list, "': '", item, "' in [", text,
              "] is not a number or a range a-b");
    HostRange r{lo, std::stoll(lo), std::stoll(hi), lo.size()};
    MOE_CHECK(r.hi >= r.lo, variable, "='", list, "': the range ", item, " runs backwards");
    items.push_back(r);
  }
  MOE_CHECK(!items.empty() && text.back() != ',', variable, "='", list, "': empty item in [", text,
            "]");
  return items;
}

// Splits at the commas outside brackets; checks that brackets pair up.
std::vector<std::string> split_entries(const std::string& list, const std::string& variable) {
  std::vector<std::string> entries;
  std::string current;
  int depth = 0;
  for (char c : list) {
    if (c == '[') ++depth;
    if (c == ']') --depth;
    MOE_CHECK(depth == 0 || depth == 1, variable, "='", list, "': unbalanced or nested brackets");
    if (c == ',' && depth == 0) {
      entries.push_back(current);
      current.clear();
    } else {
      current += c;
    }
  }
  MOE_CHECK(depth == 0, variable, "='", list, "': unbalanced brackets");
  entries.push_back(current);
  for (const std::string& e : entries)
    MOE_CHECK(!e.empty(), variable, "='", list, "': an empty host name");
  return entries;
}

HostPattern parse_entry(const std::string& entry, const std::string& list,
                        const std::string& variable) {
  HostPattern p;
  p.literals.emplace_back();
  for (size_t i = 0; i < entry.size(); ++i) {
    if (entry[i] != '[') {
      p.literals.back() += entry[i];
      continue;
    }
    const size_t close = entry.find(']', i);  // split_entries checked the pairing
    p.brackets.push_back(parse_bracket(entry.substr(i + 1, close - i - 1), list, variable));
    p.literals.emplace_back();
    i = close;
  }
  return p;
}

}  // namespace

const char* launcher_name(Launcher launcher) {
  switch (launcher) {
    case Launcher::none:
      return "none";
    case Launcher::torchrun:
      return "torchrun";
    case Launcher::openmpi:
      return "openmpi";
    case Launcher::slurm:
      return "slurm";
  }
  return "?";
}

std::string LaunchEnv::describe() const {
  std::ostringstream out;
  out << "rank " << rank << " of " << world_size << " (local " << local_rank << " of "
      << local_world_size << "), launcher " << launcher_name(launcher);
  if (!master_addr.empty() || master_port != 0)
    out << ", master " << (master_addr.empty() ? "?" : master_addr) << ":" << master_port;
  return out.str();
}

LaunchEnv parse_launch_env(const EnvMap& env) {
  LaunchEnv e;
  if (lookup(env, "RANK") || lookup(env, "WORLD_SIZE")) {
    e = parse_torchrun(env);
  } else if (lookup(env, "OMPI_COMM_WORLD_RANK")) {
    e = parse_openmpi(env);
  } else if (lookup(env, "SLURM_PROCID")) {
    e = parse_slurm(env);
  }
  read_master(env, e);
  return e;
}

EnvMap current_environment() {
  EnvMap env;
  for (char** p = environ; p && *p; ++p) {
    const std::string entry = *p;
    const size_t eq = entry.find('=');
    if (eq != std::string::npos) env.emplace(entry.substr(0, eq), entry.substr(eq + 1));
  }
  return env;
}

LaunchEnv read_launch_env() {
  return parse_launch_env(current_environment());
}

std::vector<std::string> expand_slurm_hostlist(const std::string& list, const std::string& variable,
                                               size_t max_hosts) {
  MOE_CHECK(!list.empty(), variable, " is empty");
  std::vector<std::string> hosts;
  for (const std::string& entry : split_entries(list, variable)) {
    const HostPattern p = parse_entry(entry, list, variable);
    // Every combination, the last bracket fastest (as Slurm lists them).
    std::vector<std::string> names{p.literals[0]};
    for (size_t b = 0; b < p.brackets.size(); ++b) {
      std::vector<std::string> next;
      for (const std::string& head : names) {
        for (const HostRange& r : p.brackets[b]) {
          for (int64_t v = r.lo; v <= r.hi; ++v) {
            MOE_CHECK(hosts.size() + next.size() < max_hosts, variable, "='", list,
                      "' names more than ", max_hosts, " hosts");
            next.push_back(head + pad(v, r.width) + p.literals[b + 1]);
          }
        }
      }
      names = std::move(next);
    }
    hosts.insert(hosts.end(), names.begin(), names.end());
  }
  return hosts;
}

std::string slurm_first_host(const std::string& list, const std::string& variable) {
  MOE_CHECK(!list.empty(), variable, " is empty");
  const HostPattern p = parse_entry(split_entries(list, variable).front(), list, variable);
  std::string host = p.literals[0];
  for (size_t b = 0; b < p.brackets.size(); ++b)
    host += p.brackets[b].front().lo_text + p.literals[b + 1];
  return host;
}

std::vector<int> expand_slurm_tasks_per_node(const std::string& value,
                                             const std::string& variable) {
  std::vector<int> counts;
  std::stringstream in(value);
  for (std::string item; std::getline(in, item, ',');) {
    // "N" or "N(xM)"
    const size_t paren = item.find("(x");
    const std::string n_text = item.substr(0, paren);
    int repeat = 1;
    if (paren != std::string::npos) {
      MOE_CHECK(item.back() == ')', variable, "='", value, "': '", item, "' is not N or N(xM)");
      repeat =
          parse_at_least(variable + " repeat", item.substr(paren + 2, item.size() - paren - 3), 1);
    }
    const int n = parse_at_least(variable, n_text, 0);
    MOE_CHECK(counts.size() + static_cast<size_t>(repeat) <= (1u << 20), variable, "='", value,
              "' names too many nodes");
    counts.insert(counts.end(), static_cast<size_t>(repeat), n);
  }
  MOE_CHECK(!counts.empty() && value.back() != ',', variable, "='", value,
            "' is not a list of N or N(xM)");
  return counts;
}

}  // namespace moe::dist
