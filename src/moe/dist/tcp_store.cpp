#include "moe/dist/tcp_store.h"

#include <arpa/inet.h>
#include <fcntl.h>
#include <netdb.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <poll.h>
#include <sys/socket.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cstdint>
#include <cstring>
#include <map>
#include <set>
#include <sstream>
#include <thread>
#include <vector>

#include "moe/core/error.h"

// MOE_CHECK without its "[check failed: ...]" part: the rendezvous's failures are read by
// people launching jobs, and the message says all there is to say.
#define FAIL_UNLESS(cond, ...)          \
  do {                                  \
    if (!(cond)) MOE_FAIL(__VA_ARGS__); \
  } while (0)

namespace moe::dist {
namespace {

using Clock = std::chrono::steady_clock;
using std::chrono::milliseconds;

// Requests. Frame: u8 op, u32 rank, u64 timeout_ms, u32 key bytes, key, u64 value bytes, value.
enum Op : unsigned char { kHello = 1, kSet = 2, kGet = 3, kBarrier = 4 };
// Replies. Frame: u8 status, u64 bytes, payload (the value, or the reason).
enum Status : unsigned char { kOk = 0, kTimedOut = 1, kFailed = 2 };

constexpr size_t kMaxKey = 4096;
constexpr uint64_t kMaxValue = uint64_t{1} << 30;
constexpr const char* kRendezvous = "\x01rendezvous";  // the join barrier (no user name has \x01)

std::string errno_text(int err) {
  return std::strerror(err);
}

std::string seconds_text(milliseconds ms) {
  std::ostringstream out;
  out << static_cast<double>(ms.count()) / 1000.0 << " s";
  return out.str();
}

void put_u32(std::string& out, uint32_t v) {
  for (int i = 0; i < 4; ++i) out += static_cast<char>((v >> (8 * i)) & 0xff);
}
void put_u64(std::string& out, uint64_t v) {
  for (int i = 0; i < 8; ++i) out += static_cast<char>((v >> (8 * i)) & 0xff);
}
uint64_t get_le(const char* p, int bytes) {
  uint64_t v = 0;
  for (int i = 0; i < bytes; ++i) v |= uint64_t{static_cast<unsigned char>(p[i])} << (8 * i);
  return v;
}

std::string encode_request(unsigned char op, int rank, milliseconds timeout, const std::string& key,
                           const std::string& value) {
  std::string out(1, static_cast<char>(op));
  put_u32(out, static_cast<uint32_t>(rank));
  put_u64(out, static_cast<uint64_t>(timeout.count()));
  put_u32(out, static_cast<uint32_t>(key.size()));
  out += key;
  put_u64(out, value.size());
  out += value;
  return out;
}

std::string encode_reply(unsigned char status, const std::string& payload) {
  std::string out(1, static_cast<char>(status));
  put_u64(out, payload.size());
  out += payload;
  return out;
}

// Writes all of `data` before `deadline`; false on error or timeout (errno-like code in *err).
bool send_all(int fd, const std::string& data, Clock::time_point deadline, int* err) {
  size_t sent = 0;
  while (sent < data.size()) {
    const ssize_t n = ::send(fd, data.data() + sent, data.size() - sent, MSG_NOSIGNAL);
    if (n > 0) {
      sent += static_cast<size_t>(n);
      continue;
    }
    if (n < 0 && errno == EINTR) continue;
    if (n < 0 && (errno == EAGAIN || errno == EWOULDBLOCK)) {
      const auto left = std::chrono::duration_cast<milliseconds>(deadline - Clock::now()).count();
      if (left <= 0) {
        *err = ETIMEDOUT;
        return false;
      }
      pollfd p{fd, POLLOUT, 0};
      ::poll(&p, 1, static_cast<int>(std::min<int64_t>(left, 1000)));
      continue;
    }
    *err = n < 0 ? errno : EPIPE;
    return false;
  }
  return true;
}

// Names a list of ranks, at most 16 of them.
std::string rank_list(const std::vector<int>& ranks) {
  std::ostringstream out;
  out << (ranks.size() == 1 ? "rank " : "ranks ");
  for (size_t i = 0; i < ranks.size() && i < 16; ++i) out << (i ? ", " : "") << ranks[i];
  if (ranks.size() > 16) out << " and " << ranks.size() - 16 << " more";
  return out.str();
}

void set_nonblocking(int fd) {
  ::fcntl(fd, F_SETFL, ::fcntl(fd, F_GETFL) | O_NONBLOCK);
}

// connect() that gives up at `deadline` (a host that drops packets would otherwise hold it for
// the kernel's SYN retries, minutes); leaves the socket blocking. 0 or an errno code.
int connect_before(int fd, const sockaddr* addr, socklen_t len, Clock::time_point deadline) {
  const int flags = ::fcntl(fd, F_GETFL);
  ::fcntl(fd, F_SETFL, flags | O_NONBLOCK);
  int err = 0;
  if (::connect(fd, addr, len) != 0) {
    err = errno;
    if (err == EINPROGRESS) {
      const auto left = std::chrono::duration_cast<milliseconds>(deadline - Clock::now()).count();
      pollfd p{fd, POLLOUT, 0};
      if (::poll(&p, 1, static_cast<int>(std::clamp<int64_t>(left, 1, 5000))) == 1) {
        socklen_t size = sizeof(err);
        ::getsockopt(fd, SOL_SOCKET, SO_ERROR, &err, &size);
      } else {
        err = ETIMEDOUT;
      }
    }
  }
  ::fcntl(fd, F_SETFL, flags);
  return err;
}

}  // namespace

// ---- the server (rank 0) ---------------------------------------------------------------------

class TcpStore::Server {
 public:
  Server(int port, int world_size) : world_size_(world_size) {
    listen_fd_ = ::socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
    MOE_CHECK(listen_fd_ >= 0, "rendezvous: cannot create a socket: ", errno_text(errno));
    const int one = 1;
    ::setsockopt(listen_fd_, SOL_SOCKET, SO_REUSEADDR, &one, sizeof(one));
    sockaddr_in addr{};
    addr.sin_family = AF_INET;
    addr.sin_addr.s_addr = htonl(INADDR_ANY);
    addr.sin_port = htons(static_cast<uint16_t>(port));
    if (::bind(listen_fd_, reinterpret_cast<sockaddr*>(&addr), sizeof(addr)) != 0 ||
        ::listen(listen_fd_, 1024) != 0) {
      const int err = errno;
      ::close(listen_fd_);
      MOE_FAIL("rendezvous: rank 0 cannot listen on port ", port,
               " (MASTER_PORT): ", errno_text(err),
               err == EADDRINUSE ? " (another process on this host uses it: choose another "
                                   "MASTER_PORT)"
                                 : "");
    }
    socklen_t len = sizeof(addr);
    ::getsockname(listen_fd_, reinterpret_cast<sockaddr*>(&addr), &len);
    port_ = ntohs(addr.sin_port);
    set_nonblocking(listen_fd_);
    MOE_CHECK(::pipe2(wake_, O_CLOEXEC | O_NONBLOCK) == 0, "rendezvous: pipe: ", errno_text(errno));
    thread_ = std::thread([this] { loop(); });
  }

  ~Server() {
    const char c = 0;
    (void)!::write(wake_[1], &c, 1);
    thread_.join();
    for (auto& [fd, client] : clients_) ::close(fd);
    ::close(listen_fd_);
    ::close(wake_[0]);
    ::close(wake_[1]);
  }

  int port() const { return port_; }

 private:
  struct Client {
    int rank = -1;  // -1 until its hello
    std::string in;
  };
  struct Waiter {
    int fd;
    Clock::time_point deadline;
    milliseconds timeout;
  };
  struct Barrier {
    std::set<int> arrived;
    std::vector<Waiter> waiters;
  };
  struct Request {
    unsigned char op;
    int rank;
    milliseconds timeout;
    std::string key, value;
  };

  void loop() {
    while (true) {
      std::vector<pollfd> fds{{wake_[0], POLLIN, 0}, {listen_fd_, POLLIN, 0}};
      for (const auto& [fd, client] : clients_) fds.push_back({fd, POLLIN, 0});
      ::poll(fds.data(), fds.size(), poll_timeout_ms());
      if (fds[0].revents) {
        close_all();
        return;
      }
      if (fds[1].revents & POLLIN) accept_clients();
      for (size_t i = 2; i < fds.size(); ++i)
        if (fds[i].revents && clients_.count(fds[i].fd)) read_client(fds[i].fd);
      expire(Clock::now());
      // Clients that could not be answered, dropped here rather than while the tables that
      // drop() edits are being walked.
      while (!broken_.empty()) {
        const int fd = broken_.back();
        broken_.pop_back();
        drop(fd);
      }
    }
  }

  int poll_timeout_ms() const {
    Clock::time_point next = Clock::now() + milliseconds(1000);
    for (const auto& [key, waiters] : gets_)
      for (const Waiter& w : waiters) next = std::min(next, w.deadline);
    for (const auto& [name, b] : barriers_)
      for (const Waiter& w : b.waiters) next = std::min(next, w.deadline);
    const auto ms = std::chrono::duration_cast<milliseconds>(next - Clock::now()).count();
    return static_cast<int>(std::clamp<int64_t>(ms + 1, 0, 1000));
  }

  void accept_clients() {
    while (true) {
      const int fd = ::accept4(listen_fd_, nullptr, nullptr, SOCK_CLOEXEC | SOCK_NONBLOCK);
      if (fd < 0) return;
      const int one = 1;
      ::setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof(one));
      clients_[fd] = Client{};
    }
  }

  void read_client(int fd) {
    Client& c = clients_.at(fd);
    char buf[65536];
    while (true) {
      const ssize_t n = ::recv(fd, buf, sizeof(buf), 0);
      if (n > 0) {
        c.in.append(buf, static_cast<size_t>(n));
        continue;
      }
      if (n < 0 && errno == EINTR) continue;
      if (n < 0 && (errno == EAGAIN || errno == EWOULDBLOCK)) break;
      drop(fd);  // closed, or an error
      return;
    }
    // Whole frames.
    while (true) {
      Request r;
      const int used = parse(c.in, &r);
      if (used == 0) return;
      if (used < 0) {  // not one of ours
        drop(fd);
        return;
      }
      c.in.erase(0, static_cast<size_t>(used));
      handle(fd, r);
      if (!clients_.count(fd)) return;
    }
  }

  // Bytes of the first whole request in `in` (0: incomplete, -1: malformed).
  static int parse(const std::string& in, Request* r) {
    constexpr size_t head = 1 + 4 + 8 + 4;
    if (in.size() < head) return 0;
    const uint64_t key_len = get_le(in.data() + 13, 4);
    if (key_len > kMaxKey) return -1;
    if (in.size() < head + key_len + 8) return 0;
    const uint64_t value_len = get_le(in.data() + head + key_len, 8);
    if (value_len > kMaxValue) return -1;
    const size_t total = head + key_len + 8 + value_len;
    if (in.size() < total) return 0;
    r->op = static_cast<unsigned char>(in[0]);
    r->rank = static_cast<int>(get_le(in.data() + 1, 4));
    r->timeout = milliseconds(static_cast<int64_t>(get_le(in.data() + 5, 8)));
    r->key = in.substr(head, key_len);
    r->value = in.substr(head + key_len + 8, value_len);
    return static_cast<int>(total);
  }

  void reply(int fd, unsigned char status, const std::string& payload) {
    int err = 0;
    if (!send_all(fd, encode_reply(status, payload), Clock::now() + milliseconds(10000), &err))
      broken_.push_back(fd);
  }

  void handle(int fd, const Request& r) {
    Client& c = clients_.at(fd);
    if (r.op == kHello) {
      const int size = std::atoi(r.value.c_str());
      if (size != world_size_) {
        reply(fd, kFailed,
              moe::detail::concat("rank ", r.rank, " was started with world size ", r.value,
                                  ", rank 0 with ", world_size_));
        return;
      }
      if (r.rank < 0 || r.rank >= world_size_) {
        reply(fd, kFailed,
              moe::detail::concat("rank ", r.rank, " is not below the world size ", world_size_));
        return;
      }
      if (connected_.count(r.rank)) {
        reply(fd, kFailed,
              moe::detail::concat("rank ", r.rank,
                                  " is already connected: two "
                                  "processes were given rank ",
                                  r.rank));
        return;
      }
      c.rank = r.rank;
      connected_.insert(r.rank);
      left_.erase(r.rank);  // a rank restarted
      reply(fd, kOk, "");
      return;
    }
    if (c.rank < 0) {
      drop(fd);  // no hello: not one of ours
      return;
    }
    const Clock::time_point deadline = Clock::now() + r.timeout;
    switch (r.op) {
      case kSet: {
        values_[r.key] = r.value;
        reply(fd, kOk, "");
        auto it = gets_.find(r.key);
        if (it != gets_.end()) {
          const std::vector<Waiter> waiters = std::move(it->second);
          gets_.erase(it);
          for (const Waiter& w : waiters)
            if (clients_.count(w.fd)) reply(w.fd, kOk, r.value);
        }
        return;
      }
      case kGet: {
        auto it = values_.find(r.key);
        if (it != values_.end()) {
          reply(fd, kOk, it->second);
        } else {
          gets_[r.key].push_back({fd, deadline, r.timeout});
        }
        return;
      }
      case kBarrier: {
        Barrier& b = barriers_[r.key];
        b.arrived.insert(c.rank);
        b.waiters.push_back({fd, deadline, r.timeout});
        if (static_cast<int>(b.arrived.size()) == world_size_) {
          const std::vector<Waiter> waiters = std::move(b.waiters);
          barriers_.erase(r.key);
          for (const Waiter& w : waiters)
            if (clients_.count(w.fd)) reply(w.fd, kOk, "");
        } else {
          fail_if_left(r.key);
        }
        return;
      }
      default:
        drop(fd);
    }
  }

  std::string arrivals(const Barrier& b) const {
    std::vector<int> missing;
    for (int r = 0; r < world_size_; ++r)
      if (!b.arrived.count(r)) missing.push_back(r);
    return moe::detail::concat(b.arrived.size(), " of ", world_size_,
                               " ranks arrived (missing: ", rank_list(missing), ")");
  }

  // Ends barrier `name` for its waiters if a rank that has not reached it has left.
  void fail_if_left(const std::string& name) {
    auto it = barriers_.find(name);
    if (it == barriers_.end()) return;
    std::vector<int> gone;
    for (int r : left_)
      if (!it->second.arrived.count(r)) gone.push_back(r);
    if (gone.empty()) return;
    const std::string why = moe::detail::concat(
        rank_list(gone), " left (", gone.size() == 1 ? "its connection" : "their connections",
        " to the store closed) before reaching it; ", arrivals(it->second));
    const std::vector<Waiter> waiters = std::move(it->second.waiters);
    barriers_.erase(it);
    for (const Waiter& w : waiters)
      if (clients_.count(w.fd)) reply(w.fd, kFailed, why);
  }

  void drop(int fd) {
    auto it = clients_.find(fd);
    if (it == clients_.end()) return;
    const int rank = it->second.rank;
    clients_.erase(it);
    ::close(fd);
    for (auto& [key, waiters] : gets_)
      std::erase_if(waiters, [fd](const Waiter& w) { return w.fd == fd; });
    for (auto& [name, b] : barriers_)
      std::erase_if(b.waiters, [fd](const Waiter& w) { return w.fd == fd; });
    if (rank < 0) return;
    connected_.erase(rank);
    left_.insert(rank);
    std::vector<std::string> names;
    for (const auto& [name, b] : barriers_) names.push_back(name);
    for (const std::string& name : names) fail_if_left(name);
  }

  void expire(Clock::time_point now) {
    for (auto it = gets_.begin(); it != gets_.end();) {
      std::vector<Waiter> late;
      std::erase_if(it->second, [&](const Waiter& w) {
        if (w.deadline > now) return false;
        late.push_back(w);
        return true;
      });
      for (const Waiter& w : late)
        if (clients_.count(w.fd))
          reply(w.fd, kTimedOut,
                moe::detail::concat("the key was never set (", connected_.size(), " of ",
                                    world_size_, " ranks connected)"));
      it = it->second.empty() ? gets_.erase(it) : std::next(it);
    }
    // A barrier that one waiter has given up on can no longer complete: it ends for all its
    // waiters at once, with the same count (rank 0's own process may end right after, and with
    // it this server).
    for (auto it = barriers_.begin(); it != barriers_.end();) {
      const std::vector<Waiter>& waiters = it->second.waiters;
      if (std::none_of(waiters.begin(), waiters.end(),
                       [now](const Waiter& w) { return w.deadline <= now; })) {
        ++it;
        continue;
      }
      const std::string why = arrivals(it->second);
      for (const Waiter& w : waiters)
        if (clients_.count(w.fd)) reply(w.fd, kTimedOut, why);
      it = barriers_.erase(it);
    }
  }

  // Rank 0 is closing its store: whoever still waits hears why. Requests already sent are read
  // and handled first: closing a socket with unread data resets the connection, which can
  // discard the answer before its rank reads it.
  void close_all() {
    std::vector<int> fds;
    for (const auto& [fd, client] : clients_) fds.push_back(fd);
    for (int fd : fds)
      if (clients_.count(fd)) read_client(fd);
    const std::string why = "rank 0 closed its store (rank 0 is exiting)";
    for (const auto& [key, waiters] : gets_)
      for (const Waiter& w : waiters) reply(w.fd, kFailed, why);
    for (const auto& [name, b] : barriers_)
      for (const Waiter& w : b.waiters) reply(w.fd, kFailed, why);
  }

  int world_size_;
  int listen_fd_ = -1;
  int port_ = 0;
  int wake_[2] = {-1, -1};
  std::thread thread_;
  std::map<int, Client> clients_;   // by fd
  std::vector<int> broken_;         // clients to drop: a reply could not be sent
  std::set<int> connected_, left_;  // ranks
  std::map<std::string, std::string> values_;
  std::map<std::string, std::vector<Waiter>> gets_;
  std::map<std::string, Barrier> barriers_;
};

// ---- the client (every rank) ---------------------------------------------------------------

struct TcpStore::Reply {
  unsigned char status = kOk;
  std::string payload;
};

TcpStore::TcpStore(const TcpStoreOptions& options) : options_(options), port_(options.port) {
  MOE_CHECK(options.world_size >= 1 && options.rank >= 0 && options.rank < options.world_size,
            "TcpStore: rank ", options.rank, " of world size ", options.world_size);
  MOE_CHECK(options.timeout.count() > 0, "TcpStore: the timeout must be positive");
  if (options.rank == 0) {
    server_ = std::make_unique<Server>(options.port, options.world_size);
    port_ = server_->port();
  } else {
    MOE_CHECK(!options.host.empty(),
              "rendezvous: rank 0's address is not known: set MASTER_ADDR (and MASTER_PORT)");
    MOE_CHECK(options.port > 0 && options.port <= 65535, "rendezvous at ", options.host,
              ": no port: set MASTER_PORT");
  }
  connect_to_server();
  if (options.wait_for_workers) wait_for_workers();
}

TcpStore::~TcpStore() {
  if (fd_ >= 0) ::close(fd_);
  server_.reset();
}

std::string TcpStore::address() const {
  return moe::detail::concat(options_.host.empty() ? "localhost" : options_.host, ":", port_);
}

void TcpStore::connect_to_server() {
  const auto start = Clock::now();
  const auto deadline = start + options_.timeout;
  // Rank 0 reaches its own server over the loopback.
  const std::string host = options_.rank == 0 ? "127.0.0.1" : options_.host;
  std::string last_error = "no attempt";
  auto pause = milliseconds(10);
  while (true) {
    addrinfo hints{};
    hints.ai_family = AF_INET;
    hints.ai_socktype = SOCK_STREAM;
    addrinfo* found = nullptr;
    const int rc = ::getaddrinfo(host.c_str(), std::to_string(port_).c_str(), &hints, &found);
    if (rc != 0) {
      last_error = moe::detail::concat("cannot resolve '", host, "': ", ::gai_strerror(rc));
    } else {
      for (addrinfo* a = found; a && fd_ < 0; a = a->ai_next) {
        const int fd = ::socket(a->ai_family, a->ai_socktype | SOCK_CLOEXEC, a->ai_protocol);
        if (fd < 0) continue;
        const int err = connect_before(fd, a->ai_addr, a->ai_addrlen, deadline);
        if (err == 0) {
          fd_ = fd;
        } else {
          last_error = errno_text(err);
          ::close(fd);
        }
      }
      ::freeaddrinfo(found);
    }
    if (fd_ >= 0) break;
    FAIL_UNLESS(Clock::now() + pause < deadline, "rendezvous at ", address(), " timed out after ",
                seconds_text(options_.timeout), ": rank ", options_.rank,
                " could not reach rank 0's store (", last_error, ")");
    std::this_thread::sleep_for(pause);
    pause = std::min(pause * 2, milliseconds(1000));
  }
  const int one = 1;
  ::setsockopt(fd_, IPPROTO_TCP, TCP_NODELAY, &one, sizeof(one));
  const Reply r = request(kHello, "", std::to_string(options_.world_size), "the hello");
  FAIL_UNLESS(r.status == kOk, "rendezvous at ", address(), ": rank 0 refused rank ", options_.rank,
              ": ", r.payload);
}

TcpStore::Reply TcpStore::request(unsigned char op, const std::string& key,
                                  const std::string& value, const std::string& what) {
  std::lock_guard<std::mutex> lock(mutex_);
  MOE_CHECK(key.size() <= kMaxKey, "store at ", address(), ": key of ", key.size(),
            " bytes; at most ", kMaxKey);
  MOE_CHECK(value.size() <= kMaxValue, "store at ", address(), ": value of ", value.size(),
            " bytes; at most ", kMaxValue);
  // The server answers at the deadline with what it knows; this rank waits a little longer for
  // that answer before it gives up on the server itself.
  const milliseconds grace = std::min(options_.timeout, milliseconds(5000));
  const auto deadline = Clock::now() + options_.timeout + grace;
  int err = 0;
  MOE_CHECK(send_all(fd_, encode_request(op, options_.rank, options_.timeout, key, value), deadline,
                     &err),
            "store at ", address(), ": rank ", options_.rank, " cannot send ", what, ": ",
            errno_text(err));
  std::string in;
  const auto need = [&]() -> size_t {
    if (in.size() < 9) return 9;
    return 9 + static_cast<size_t>(get_le(in.data() + 1, 8));
  };
  char buf[65536];
  while (in.size() < need()) {
    const auto left = std::chrono::duration_cast<milliseconds>(deadline - Clock::now()).count();
    FAIL_UNLESS(left > 0, "store at ", address(), ": rank 0's store did not answer ", what,
                " within ", seconds_text(options_.timeout + grace), " (rank 0 is stuck?)");
    pollfd p{fd_, POLLIN, 0};
    const int ready = ::poll(&p, 1, static_cast<int>(std::min<int64_t>(left, 1000)));
    if (ready <= 0) continue;
    const ssize_t n = ::recv(fd_, buf, std::min(sizeof(buf), need() - in.size()), 0);
    if (n < 0 && errno == EINTR) continue;
    FAIL_UNLESS(n > 0, "store at ", address(),
                ": the connection to rank 0's store closed while rank ", options_.rank,
                " waited for ", what, n < 0 ? " (" + errno_text(errno) + ")" : "",
                " (rank 0 exited?)");
    in.append(buf, static_cast<size_t>(n));
  }
  return Reply{static_cast<unsigned char>(in[0]), in.substr(9)};
}

void TcpStore::set(const std::string& key, const std::string& value) {
  const Reply r = request(kSet, key, value, "set('" + key + "')");
  FAIL_UNLESS(r.status == kOk, "store at ", address(), ": set('", key, "') failed: ", r.payload);
}

std::string TcpStore::get(const std::string& key) {
  Reply r = request(kGet, key, "", "get('" + key + "')");
  FAIL_UNLESS(r.status != kTimedOut, "store at ", address(), ": get('", key, "') timed out after ",
              seconds_text(options_.timeout), ": ", r.payload);
  FAIL_UNLESS(r.status == kOk, "store at ", address(), ": get('", key, "') failed: ", r.payload);
  return std::move(r.payload);
}

void TcpStore::barrier(const std::string& name) {
  const Reply r = request(kBarrier, name, "", "barrier '" + name + "'");
  FAIL_UNLESS(r.status != kTimedOut, "store at ", address(), ": barrier '", name,
              "' timed out after ", seconds_text(options_.timeout), ": ", r.payload);
  FAIL_UNLESS(r.status == kOk, "store at ", address(), ": barrier '", name,
              "' failed: ", r.payload);
}

void TcpStore::wait_for_workers() {
  const Reply r = request(kBarrier, kRendezvous, "", "the other ranks");
  FAIL_UNLESS(r.status != kTimedOut, "rendezvous at ", address(), " timed out after ",
              seconds_text(options_.timeout), ": ", r.payload);
  FAIL_UNLESS(r.status == kOk, "rendezvous at ", address(), " failed: ", r.payload);
}

int find_free_port() {
  const int fd = ::socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
  MOE_CHECK(fd >= 0, "find_free_port: socket: ", errno_text(errno));
  sockaddr_in addr{};
  addr.sin_family = AF_INET;
  addr.sin_addr.s_addr = htonl(INADDR_ANY);
  addr.sin_port = 0;
  socklen_t len = sizeof(addr);
  const bool ok = ::bind(fd, reinterpret_cast<sockaddr*>(&addr), sizeof(addr)) == 0 &&
                  ::getsockname(fd, reinterpret_cast<sockaddr*>(&addr), &len) == 0;
  const int err = errno;
  ::close(fd);
  MOE_CHECK(ok, "find_free_port: ", errno_text(err));
  return ntohs(addr.sin_port);
}

}  // namespace moe::dist
