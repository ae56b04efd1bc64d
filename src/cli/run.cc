#include "cli/run.hh"

#include <sys/stat.h>
#include <unistd.h>

#include <cerrno>
#include <cstdio>
#include <cstdlib>
#include <cstring>

namespace pno::cli {

std::string preload_with(const std::string& shim, const char* current) {
  if (current == nullptr || *current == '\0') return shim;
  // LD_PRELOAD separates entries with spaces or colons.
  std::string cur(current);
  std::size_t pos = 0;
  while (pos <= cur.size()) {
    std::size_t end = cur.find_first_of(": ", pos);
    if (end == std::string::npos) end = cur.size();
    if (cur.compare(pos, end - pos, shim) == 0) return cur;
    pos = end + 1;
  }
  return shim + ":" + cur;
}

std::string default_shim_path() {
  char self[4096];
  ssize_t n = ::readlink("/proc/self/exe", self, sizeof self - 1);
  if (n <= 0) return "libpno.so";
  self[n] = '\0';
  std::string dir(self);
  dir.erase(dir.find_last_of('/'));
  std::string candidate = dir + "/../lib/libpno.so";
  if (::access(candidate.c_str(), R_OK) == 0) {
    char real[4096];
    if (::realpath(candidate.c_str(), real) != nullptr) return real;
    return candidate;
  }
  return "libpno.so";  // let the dynamic loader search for it
}

int run(const RunOptions& o) {
  if (o.command.empty()) {
    std::fprintf(stderr, "pno run: no command given (pno run [options] -- APP ARGS...)\n");
    return 2;
  }
  std::string sock = o.engine_socket;
  if (sock.empty()) {
    const char* env = std::getenv("PNO_ENGINE_SOCKET");
    sock = env != nullptr && *env != '\0' ? env : "/run/pno/engine.sock";
  }
  bool require = o.require_engine;
  if (const char* env = std::getenv("PNO_REQUIRE_ENGINE"); env != nullptr && std::strcmp(env, "1") == 0) {
    require = true;
  }
  std::string shim = o.shim;
  if (shim.empty()) {
    const char* env = std::getenv("PNO_SHIM");
    shim = env != nullptr && *env != '\0' ? env : default_shim_path();
  }
  if (shim.find('/') != std::string::npos && ::access(shim.c_str(), R_OK) != 0) {
    std::fprintf(stderr, "pno run: cannot read the shim %s: %s\n", shim.c_str(), std::strerror(errno));
    return 2;
  }
  if (require) {
    // Fail before the program starts when the engine is plainly absent; the shim checks the rest
    // (ABI, region) and exits with status 70 if the attach fails.
    struct stat sb {};
    if (::stat(sock.c_str(), &sb) != 0 || !S_ISSOCK(sb.st_mode)) {
      std::fprintf(stderr, "pno run: engine required but not running: no engine socket at %s\n", sock.c_str());
      return 70;
    }
  }
  ::setenv("PNO_ENGINE_SOCKET", sock.c_str(), 1);
  if (require) ::setenv("PNO_REQUIRE_ENGINE", "1", 1);
  if (!o.log_level.empty()) ::setenv("PNO_LOG_LEVEL", o.log_level.c_str(), 1);
  std::string preload = preload_with(shim, std::getenv("LD_PRELOAD"));
  ::setenv("LD_PRELOAD", preload.c_str(), 1);

  std::vector<char*> argv;
  argv.reserve(o.command.size() + 1);
  for (const std::string& a : o.command) argv.push_back(const_cast<char*>(a.c_str()));
  argv.push_back(nullptr);
  ::execvp(argv[0], argv.data());
  int e = errno;
  std::fprintf(stderr, "pno run: cannot run %s: %s\n", argv[0], std::strerror(e));
  return e == ENOENT ? 127 : 126;
}

}  // namespace pno::cli
