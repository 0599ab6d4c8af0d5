// The last words of a failing rank (fatal.h).
#include "moe/dist/fatal.h"

#include <unistd.h>

#include <cstdio>
#include <mutex>

#include "moe/dist/process_group.h"

namespace moe::dist {
namespace {

std::mutex g_mutex;
std::weak_ptr<ProcessGroup> g_world;
std::string g_last_line;

std::string host_name() {
  char name[256] = {};
  if (gethostname(name, sizeof(name) - 1) != 0) return "?";
  return name;
}

}  // namespace

void register_world(const std::shared_ptr<ProcessGroup>& world) {
  std::lock_guard lock(g_mutex);
  g_world = world;
}

void print_rank_line(const std::string& message) {
  std::lock_guard lock(g_mutex);
  const std::shared_ptr<ProcessGroup> world = g_world.lock();
  const std::string line = "[rank " + (world ? std::to_string(world->rank()) : std::string("?")) +
                           " " + host_name() + "] " + message;
  if (line == g_last_line) return;
  g_last_line = line;
  std::fprintf(stderr, "%s\n", line.c_str());
  std::fflush(stderr);
}

bool report_and_abort(const std::exception& error) {
  std::shared_ptr<ProcessGroup> world;
  {
    std::lock_guard lock(g_mutex);
    world = g_world.lock();
  }
  if (!world || world->size() <= 1) return false;
  const std::string reason = std::string("error: ") + error.what();
  print_rank_line(reason);
  world->abort(reason);
  return true;
}

}  // namespace moe::dist
