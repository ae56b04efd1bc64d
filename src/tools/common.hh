// Shared pieces of the Linux-side test programs: argument parsing, a seeded byte generator, SHA-256,
// clocks, socket helpers and one-line JSON output. These programs run on the kernel's TCP (inside the
// peer namespace) and judge the engine from outside, so they only use plain POSIX sockets.
#pragma once

#include <netinet/in.h>
#include <nettle/sha2.h>

#include <chrono>
#include <cstdint>
#include <cstdio>
#include <map>
#include <memory>
#include <optional>
#include <span>
#include <string>
#include <string_view>
#include <vector>

namespace pno::tools {

/// `--key value` and `--flag` arguments after the subcommand. Unknown keys are an error, so a typo in a
/// test script fails loudly instead of silently running with a default.
class Args {
 public:
  Args(int argc, char** argv, std::vector<std::string> known_flags, std::vector<std::string> known_keys);
  [[nodiscard]] bool ok() const { return error_.empty(); }
  [[nodiscard]] const std::string& error() const { return error_; }
  [[nodiscard]] bool flag(const std::string& name) const;
  [[nodiscard]] std::optional<std::string> get(const std::string& name) const;
  [[nodiscard]] std::string str(const std::string& name, std::string def) const;
  /// Integer with optional K/M/G (binary) suffix: "1G" = 2^30.
  [[nodiscard]] std::uint64_t u64(const std::string& name, std::uint64_t def) const;
  [[nodiscard]] double num(const std::string& name, double def) const;

 private:
  std::map<std::string, std::string> kv_;
  std::map<std::string, bool> flags_;
  std::string error_;
};

std::optional<std::uint64_t> parse_size(std::string_view s);

/// "198.18.0.1:7" -> sockaddr_in.
std::optional<sockaddr_in> parse_endpoint(std::string_view s);
std::string endpoint_str(const sockaddr_in& a);

/// Deterministic pseudo-random bytes (xoshiro256**), so both ends can produce the same stream from a seed.
class ByteGen {
 public:
  explicit ByteGen(std::uint64_t seed);
  void fill(std::span<std::uint8_t> out);

 private:
  std::uint64_t next();
  std::uint64_t s_[4];
  std::uint64_t carry_ = 0;
  unsigned carry_len_ = 0;
};

/// Incremental SHA-256 (Nettle, as the engine uses).
class Sha256 {
 public:
  Sha256();
  void update(std::span<const std::uint8_t> data);
  /// Hex digest; the object can't be updated afterwards.
  std::string hex();

 private:
  sha256_ctx ctx_{};
  std::string done_;
};

using Clock = std::chrono::steady_clock;
inline double secs_since(Clock::time_point t0) {
  return std::chrono::duration<double>(Clock::now() - t0).count();
}

/// An owned file descriptor.
class Fd {
 public:
  Fd() = default;
  explicit Fd(int fd) : fd_(fd) {}
  ~Fd() { reset(); }
  Fd(Fd&& o) noexcept : fd_(o.release()) {}
  Fd& operator=(Fd&& o) noexcept {
    if (this != &o) {
      reset();
      fd_ = o.release();
    }
    return *this;
  }
  Fd(const Fd&) = delete;
  Fd& operator=(const Fd&) = delete;
  [[nodiscard]] int get() const { return fd_; }
  [[nodiscard]] bool valid() const { return fd_ >= 0; }
  int release() {
    int f = fd_;
    fd_ = -1;
    return f;
  }
  void reset(int fd = -1);

 private:
  int fd_ = -1;
};

void set_nonblocking(int fd);
void set_nodelay(int fd);
/// SO_LINGER {1, 0}: the next close() sends a RST instead of a FIN (RFC 9293 §3.10.5 ABORT).
void set_linger0(int fd);
/// Nonblocking connect started; returns the socket or an invalid Fd (errno set).
Fd start_connect(const sockaddr_in& to);
/// Pending socket error (SO_ERROR).
int socket_error(int fd);

/// Builds one JSON object line: J().s("cmd","stream").n("bytes",1).b("ok",true).str()
class Json {
 public:
  Json& s(std::string_view k, std::string_view v);
  Json& n(std::string_view k, double v);
  Json& u(std::string_view k, std::uint64_t v);
  Json& b(std::string_view k, bool v);
  Json& raw(std::string_view k, std::string_view json);
  [[nodiscard]] std::string str() const { return "{" + body_ + "}"; }
  /// Prints the line to stdout and flushes (test drivers read it while the program runs).
  void print() const;

 private:
  void key(std::string_view k);
  std::string body_;
};

std::string errno_str(int err);

}  // namespace pno::tools
