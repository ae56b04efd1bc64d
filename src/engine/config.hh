// From options to the configuration of each part of the engine: EAL and port, stack (TCP), loop,
// the bulk client and the host service. Every check of the command line that needs no port is here.
#pragma once

#include <cstdint>
#include <optional>
#include <string>
#include <string_view>

#include "engine/host_service.hh"
#include "engine/loop.hh"
#include "engine/options.hh"
#include "engine/port.hh"
#include "engine/services.hh"
#include "stack/stack.hh"

namespace pno::engine {

enum class LogLevel { error, warn, info, debug };

/// What the engine runs with; the stack's own config is completed from the open port (stack_config).
struct EngineConfig {
  Ipv4Cidr addr;
  std::optional<Ipv4Addr> gateway;
  std::optional<MacAddr> mac;
  Pmd pmd = Pmd::auto_;
  std::optional<ClientConfig> client;
  TcpConfig tcp;
  std::optional<std::uint64_t> rcv_budget_bytes;  ///< unset: auto, from the port
  LogLevel log = LogLevel::warn;
  EalConfig eal;
  PortConfig port;
  LoopConfig loop;
};

/// "1G", "64K", "1500", "2MiB" -> bytes (binary multiples).
std::optional<std::uint64_t> parse_size(std::string_view s);

/// Validates the options and translates them. Notes go to stderr as they are found; on a usage error
/// returns nullopt with the message in `err` (for usage_error).
std::optional<EngineConfig> make_config(const Options& o, std::string& err);

/// The host service's config for --host-socket, serving `addr`. Prints the PCIe model's figures when
/// it is on; false with the message in `err` on a bad --host-ring-bytes.
bool host_service_config(const Options& o, const Ipv4Cidr& addr, HostServiceConfig& hc, std::string& err);

}  // namespace pno::engine
