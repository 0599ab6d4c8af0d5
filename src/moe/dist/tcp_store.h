// TcpStore: a small key-value rendezvous over TCP (the idea of PyTorch's TCPStore), for jobs
// whose ranks are not started by MPI: rank 0 serves a table of keys at MASTER_ADDR:MASTER_PORT
// from a thread of its own; every rank (rank 0 too, over the loopback) is a client. It spreads
// what one rank makes to the others (NCCL's unique id, the start-up table of hosts and GPUs) and
// gathers the ranks at barriers.
//
// Every blocking call has a deadline (options.timeout, Megatron's --distributed-timeout-minutes)
// and fails with moe::Error naming the address, the port, what was waited for and how many
// ranks arrived:
//   "rendezvous at node-a:29500 timed out after 30 s: 3 of 4 ranks arrived (missing: rank 2)"
// A rank whose connection closes before a barrier it has not reached ends that barrier for the
// others at once ("rank 2 left ..."), so a rank that crashed does not cost the whole timeout.
//
// Details. Rank 0 listens on every IPv4 interface (INADDR_ANY, SO_REUSEADDR) at the port; port
// 0 picks a free one (port() tells which; tests). The other ranks resolve the host with
// getaddrinfo (a name or an IPv4 address) and retry connecting until the deadline, so they may
// start before rank 0. Each rank says hello with its rank and world size; a second process with
// the same rank or a different world size is refused by name. Values are bytes (std::string).
// Keys are set once or overwritten; get() returns the latest value. A barrier name may be used
// again once every rank has passed it. The calls of one TcpStore are serialised (one request
// in flight per rank).
#pragma once

#include <chrono>
#include <memory>
#include <mutex>
#include <string>

namespace moe::dist {

struct TcpStoreOptions {
  std::string host;  // rank 0's host (MASTER_ADDR); rank 0 itself listens on every interface
  int port = 0;      // MASTER_PORT; 0 on rank 0: a free port (see port())
  int rank = 0;
  int world_size = 1;
  std::chrono::milliseconds timeout{std::chrono::minutes(10)};  // every blocking call
  // The constructor returns once every rank has connected (the "rendezvous" barrier). Off:
  // it returns once this rank is connected; call wait_for_workers() later.
  bool wait_for_workers = true;
};

class TcpStore {
 public:
  explicit TcpStore(const TcpStoreOptions& options);
  ~TcpStore();
  TcpStore(const TcpStore&) = delete;
  TcpStore& operator=(const TcpStore&) = delete;

  // Stores `value` under `key` (visible to every rank's get).
  void set(const std::string& key, const std::string& value);
  // The value of `key`, waiting until some rank has set it.
  std::string get(const std::string& key);
  // Returns once every rank has called barrier(name).
  void barrier(const std::string& name);
  // The rendezvous: returns once every rank has connected and called it (the constructor calls
  // it unless options.wait_for_workers is false).
  void wait_for_workers();

  int rank() const { return options_.rank; }
  int world_size() const { return options_.world_size; }
  int port() const { return port_; }
  // "host:port" as the messages name it.
  std::string address() const;

 private:
  class Server;
  struct Reply;
  Reply request(unsigned char op, const std::string& key, const std::string& value,
                const std::string& what);
  void connect_to_server();

  TcpStoreOptions options_;
  int port_ = 0;
  std::unique_ptr<Server> server_;  // rank 0 only
  int fd_ = -1;
  std::mutex mutex_;  // one request at a time
};

// A free TCP port on this host at the time of the call (bind to port 0, read it, close): for
// tests and for `moe launch` without --master-port. Another process may take it before use.
int find_free_port();

}  // namespace moe::dist
