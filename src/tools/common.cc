#include "tools/common.hh"

#include <arpa/inet.h>
#include <fcntl.h>
#include <netinet/tcp.h>
#include <sys/socket.h>
#include <unistd.h>

#include <cerrno>
#include <charconv>
#include <cmath>
#include <cstring>

namespace pno::tools {

Args::Args(int argc, char** argv, std::vector<std::string> known_flags, std::vector<std::string> known_keys) {
  auto is_in = [](const std::vector<std::string>& v, const std::string& s) {
    for (const auto& x : v) {
      if (x == s) return true;
    }
    return false;
  };
  for (int i = 0; i < argc; ++i) {
    std::string a = argv[i];
    if (a.rfind("--", 0) != 0 && !(a.size() == 2 && a[0] == '-')) {
      error_ = "unexpected argument: " + a;
      return;
    }
    std::string name = a[1] == '-' ? a.substr(2) : a.substr(1);
    std::optional<std::string> inline_value;
    if (auto eq = name.find('='); eq != std::string::npos) {
      inline_value = name.substr(eq + 1);
      name = name.substr(0, eq);
    }
    if (is_in(known_flags, name) && !inline_value) {
      flags_[name] = true;
    } else if (is_in(known_keys, name)) {
      if (inline_value) {
        kv_[name] = *inline_value;
      } else if (i + 1 < argc) {
        kv_[name] = argv[++i];
      } else {
        error_ = "missing value for --" + name;
        return;
      }
    } else {
      error_ = "unknown option: " + a;
      return;
    }
  }
}

bool Args::flag(const std::string& name) const { return flags_.count(name) != 0; }

std::optional<std::string> Args::get(const std::string& name) const {
  auto it = kv_.find(name);
  if (it == kv_.end()) return std::nullopt;
  return it->second;
}

std::string Args::str(const std::string& name, std::string def) const {
  auto v = get(name);
  return v ? *v : def;
}

std::optional<std::uint64_t> parse_size(std::string_view s) {
  std::uint64_t v = 0;
  auto [p, ec] = std::from_chars(s.data(), s.data() + s.size(), v);
  if (ec != std::errc{}) return std::nullopt;
  std::string_view rest(p, static_cast<std::size_t>(s.data() + s.size() - p));
  if (rest.empty()) return v;
  if (rest == "K" || rest == "k" || rest == "KiB") return v << 10;
  if (rest == "M" || rest == "MiB") return v << 20;
  if (rest == "G" || rest == "GiB") return v << 30;
  return std::nullopt;
}

std::uint64_t Args::u64(const std::string& name, std::uint64_t def) const {
  auto v = get(name);
  if (!v) return def;
  auto n = parse_size(*v);
  if (!n) {
    std::fprintf(stderr, "bad number for --%s: %s\n", name.c_str(), v->c_str());
    std::exit(64);
  }
  return *n;
}

double Args::num(const std::string& name, double def) const {
  auto v = get(name);
  if (!v) return def;
  char* end = nullptr;
  double d = std::strtod(v->c_str(), &end);
  if (end == v->c_str() || *end != '\0') {
    std::fprintf(stderr, "bad number for --%s: %s\n", name.c_str(), v->c_str());
    std::exit(64);
  }
  return d;
}

std::optional<sockaddr_in> parse_endpoint(std::string_view s) {
  auto colon = s.rfind(':');
  if (colon == std::string_view::npos) return std::nullopt;
  std::string host(s.substr(0, colon));
  std::uint16_t port = 0;
  auto ps = s.substr(colon + 1);
  auto [p, ec] = std::from_chars(ps.data(), ps.data() + ps.size(), port);
  if (ec != std::errc{} || p != ps.data() + ps.size()) return std::nullopt;
  sockaddr_in a{};
  a.sin_family = AF_INET;
  a.sin_port = htons(port);
  if (host.empty()) {
    a.sin_addr.s_addr = htonl(INADDR_ANY);
  } else if (inet_pton(AF_INET, host.c_str(), &a.sin_addr) != 1) {
    return std::nullopt;
  }
  return a;
}

std::string endpoint_str(const sockaddr_in& a) {
  char buf[INET_ADDRSTRLEN] = {};
  inet_ntop(AF_INET, &a.sin_addr, buf, sizeof buf);
  return std::string(buf) + ":" + std::to_string(ntohs(a.sin_port));
}

namespace {
std::uint64_t splitmix(std::uint64_t& x) {
  std::uint64_t z = (x += 0x9e3779b97f4a7c15ULL);
  z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ULL;
  z = (z ^ (z >> 27)) * 0x94d049bb133111ebULL;
  return z ^ (z >> 31);
}
std::uint64_t rotl(std::uint64_t x, int k) { return (x << k) | (x >> (64 - k)); }
}  // namespace

ByteGen::ByteGen(std::uint64_t seed) {
  for (auto& s : s_) s = splitmix(seed);
}

std::uint64_t ByteGen::next() {
  const std::uint64_t result = rotl(s_[1] * 5, 7) * 9;
  const std::uint64_t t = s_[1] << 17;
  s_[2] ^= s_[0];
  s_[3] ^= s_[1];
  s_[1] ^= s_[2];
  s_[0] ^= s_[3];
  s_[2] ^= t;
  s_[3] = rotl(s_[3], 45);
  return result;
}

void ByteGen::fill(std::span<std::uint8_t> out) {
  std::size_t i = 0;
  // Leftover bytes of the previous word first, so the stream does not depend on how it is chunked.
  while (i < out.size() && carry_len_ > 0) {
    out[i++] = static_cast<std::uint8_t>(carry_);
    carry_ >>= 8;
    --carry_len_;
  }
  while (i + 8 <= out.size()) {
    std::uint64_t w = next();
    std::memcpy(&out[i], &w, 8);  // little-endian host: byte k = bits 8k..8k+7, as in the tail path
    i += 8;
  }
  if (i < out.size()) {
    carry_ = next();
    carry_len_ = 8;
    while (i < out.size()) {
      out[i++] = static_cast<std::uint8_t>(carry_);
      carry_ >>= 8;
      --carry_len_;
    }
  }
}

Sha256::Sha256() { sha256_init(&ctx_); }

void Sha256::update(std::span<const std::uint8_t> data) {
  if (!data.empty()) sha256_update(&ctx_, data.size(), data.data());
}

std::string Sha256::hex() {
  if (!done_.empty()) return done_;
  std::uint8_t md[SHA256_DIGEST_SIZE];
  sha256_digest(&ctx_, sizeof md, md);
  static constexpr char kHex[] = "0123456789abcdef";
  for (unsigned i = 0; i < sizeof md; ++i) {
    done_ += kHex[md[i] >> 4];
    done_ += kHex[md[i] & 15];
  }
  return done_;
}

void Fd::reset(int fd) {
  if (fd_ >= 0) ::close(fd_);
  fd_ = fd;
}

void set_nonblocking(int fd) { ::fcntl(fd, F_SETFL, ::fcntl(fd, F_GETFL) | O_NONBLOCK); }

void set_nodelay(int fd) {
  int one = 1;
  ::setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
}

void set_linger0(int fd) {
  linger l{1, 0};
  ::setsockopt(fd, SOL_SOCKET, SO_LINGER, &l, sizeof l);
}

Fd start_connect(const sockaddr_in& to) {
  Fd fd(::socket(AF_INET, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0));
  if (!fd.valid()) return fd;
  if (::connect(fd.get(), reinterpret_cast<const sockaddr*>(&to), sizeof to) != 0 && errno != EINPROGRESS) {
    int e = errno;
    fd.reset();
    errno = e;
  }
  return fd;
}

int socket_error(int fd) {
  int err = 0;
  socklen_t len = sizeof err;
  if (::getsockopt(fd, SOL_SOCKET, SO_ERROR, &err, &len) != 0) return errno;
  return err;
}

void Json::key(std::string_view k) {
  if (!body_.empty()) body_ += ',';
  body_ += '"';
  body_ += k;
  body_ += "\":";
}

Json& Json::s(std::string_view k, std::string_view v) {
  key(k);
  body_ += '"';
  for (char c : v) {
    if (c == '"' || c == '\\') {
      body_ += '\\';
      body_ += c;
    } else if (static_cast<unsigned char>(c) < 0x20) {
      char buf[8];
      std::snprintf(buf, sizeof buf, "\\u%04x", c);
      body_ += buf;
    } else {
      body_ += c;
    }
  }
  body_ += '"';
  return *this;
}

Json& Json::n(std::string_view k, double v) {
  key(k);
  if (!std::isfinite(v)) {
    body_ += "null";
    return *this;
  }
  char buf[64];
  std::snprintf(buf, sizeof buf, "%.6g", v);
  body_ += buf;
  return *this;
}

Json& Json::u(std::string_view k, std::uint64_t v) {
  key(k);
  body_ += std::to_string(v);
  return *this;
}

Json& Json::b(std::string_view k, bool v) {
  key(k);
  body_ += v ? "true" : "false";
  return *this;
}

Json& Json::raw(std::string_view k, std::string_view json) {
  key(k);
  body_ += json;
  return *this;
}

void Json::print() const {
  std::string line = str();
  line += '\n';
  std::fwrite(line.data(), 1, line.size(), stdout);
  std::fflush(stdout);
}

std::string errno_str(int err) { return std::strerror(err); }

}  // namespace pno::tools
