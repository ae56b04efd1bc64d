// Port bring-up: the EAL arguments and start, the kernel interface check, and Port::open with its
// setup steps (vdev or probed port, mbuf pools, configure, queues, start), one more af_xdp vdev per
// further rx queue.
#include <dirent.h>
#include <net/if.h>
#include <rte_bus_vdev.h>
#include <rte_eal.h>
#include <rte_errno.h>
#include <rte_ethdev.h>
#include <rte_mbuf.h>
#include <rte_mbuf_pool_ops.h>
#include <rte_mempool.h>
#include <sys/socket.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <fstream>
#include <iterator>
#include <sstream>

#include "engine/port.hh"

namespace pno::engine {

namespace {

// Largest MTU the af_xdp PMD accepts on veth (copy mode, one page per frame).
constexpr unsigned kAfXdpMaxMtu = 3542;
// Buffers the af_xdp PMD (DPDK 22.11 rte_eth_af_xdp.c, xsk_configure) puts in the fill ring at
// start: ETH_AF_XDP_DFLT_NUM_DESCS = XSK_RING_CONS__DEFAULT_NUM_DESCS. The ring has twice the
// slots, but each rx burst refills exactly as many buffers as it took, so no more than these are
// ever waiting for the kernel to copy into; no devarg changes it.
constexpr std::uint32_t kAfXdpFillBuffers = 2048;
// No preferred busy polling: with it (the PMD's default busy_budget=64) every rx burst that finds
// the queue empty makes a recvfrom() system call, once per queue per loop iteration, so an engine
// spinning on four quiet queues spends its time in the kernel. Frames reach the socket from the
// sender's softirq all the same. redis 64 B-1 KiB at P=16: 5-8 % less engine CPU per request.
constexpr const char* kAfXdpArgs = ",busy_budget=0";
// Frames in the af_packet PMD's PACKET_RX_RING (DPDK 22.11 rte_eth_af_packet.c DFLT_FRAME_COUNT;
// the engine passes no framecnt devarg).
constexpr std::uint32_t kAfPacketFrames = 512;

std::optional<std::string> read_line(const std::string& path) {
  std::ifstream f(path);
  if (!f) return std::nullopt;
  std::string s;
  if (!std::getline(f, s)) return std::string{};
  return s;
}

bool has_arg(const std::vector<std::string>& args, std::initializer_list<std::string_view> names) {
  for (const auto& a : args) {
    for (auto n : names) {
      if (a == n || (a.size() > n.size() && a.compare(0, n.size(), n) == 0 && a[n.size()] == '=')) return true;
    }
  }
  return false;
}

/// Rx queues the kernel gives interface `iface` (/sys/class/net/IFACE/queues/rx-N); 1 when unknown.
std::uint16_t kernel_rx_queues(const std::string& iface) {
  std::uint16_t n = 0;
  while (n < 1024 && access(("/sys/class/net/" + iface + "/queues/rx-" + std::to_string(n)).c_str(), F_OK) == 0) ++n;
  return n == 0 ? 1 : n;
}

/// Free 2 MiB pages and a mounted hugetlbfs: --in-memory can work.
bool hugepages_usable(std::uint32_t pages_needed) {
  auto free_pages = read_line("/sys/kernel/mm/hugepages/hugepages-2048kB/free_hugepages");
  if (!free_pages || free_pages->empty()) return false;
  if (std::strtoul(free_pages->c_str(), nullptr, 10) < pages_needed) return false;
  std::ifstream mounts("/proc/mounts");
  std::string line;
  while (std::getline(mounts, line)) {
    std::istringstream ls(line);
    std::string dev, dir, type;
    ls >> dev >> dir >> type;
    if (type == "hugetlbfs") return true;
  }
  return false;
}

constexpr unsigned kPoolCache = 256;

/// An mbuf pool whose objects lie back to back from the first one on. The af_xdp PMD (DPDK 22.11)
/// registers the pool as its UMEM assuming exactly that layout: base of the first chunk plus
/// populated_size * object size. A default pool keeps objects inside pages, which with 4 KiB pages
/// (--no-huge) leaves a gap after every object, so the upper part of the pool lies outside the UMEM:
/// fill-ring and tx descriptors pointing there are rejected by the kernel, the buffers are lost, and
/// once the engine holds enough mbufs at once (a delay line) to reach them, rx and tx stop for good.
/// AF_XDP copies into the UMEM by virtual address, so objects need no IOVA contiguity.
rte_mempool* create_packed_pool(const char* name, unsigned n, int socket) {
  const unsigned priv = 0;
  const std::uint16_t room = RTE_MBUF_DEFAULT_BUF_SIZE;
  rte_mempool* mp = rte_mempool_create_empty(name, n, sizeof(rte_mbuf) + priv + room, kPoolCache,
                                             sizeof(rte_pktmbuf_pool_private), socket,
                                             RTE_MEMPOOL_F_NO_IOVA_CONTIG);
  if (mp == nullptr) return nullptr;
  rte_pktmbuf_pool_private pp{};
  pp.mbuf_data_room_size = room;
  pp.mbuf_priv_size = priv;
  if (rte_mempool_set_ops_byname(mp, rte_mbuf_best_mempool_ops(), nullptr) != 0) {
    rte_mempool_free(mp);
    return nullptr;
  }
  rte_pktmbuf_pool_init(mp, &pp);
  if (rte_mempool_populate_default(mp) < 0) {
    rte_mempool_free(mp);
    return nullptr;
  }
  rte_mempool_obj_iter(mp, rte_pktmbuf_init, nullptr);
  // Check the layout the PMD relies on rather than trust it: one chunk, objects packed.
  const rte_mempool_memhdr* hdr = STAILQ_FIRST(&mp->mem_list);
  const std::size_t obj = mp->header_size + mp->elt_size + mp->trailer_size;
  if (mp->nb_mem_chunks != 1 || hdr == nullptr || hdr->len < std::size_t{mp->populated_size} * obj) {
    rte_mempool_free(mp);
    rte_errno = EFAULT;
    return nullptr;
  }
  return mp;
}

}  // namespace

// ---------------------------------------------------------------------------------------------- EAL

std::vector<std::string> build_eal_args(const EalConfig& cfg, bool& use_huge) {
  std::vector<std::string> a{"pno-engine"};
  const auto& raw = cfg.raw_args;
  if (!has_arg(raw, {"-l", "-c", "--lcores"})) {
    a.emplace_back("-l");
    a.push_back(std::to_string(cfg.lcore));
  }
  const bool user_mem = has_arg(raw, {"--no-huge", "--in-memory", "-m", "--socket-mem", "--huge-dir"});
  if (user_mem) {
    use_huge = !has_arg(raw, {"--no-huge"});
  } else {
    // 64 pages = 128 MiB: the mbuf pool plus EAL's own heap.
    use_huge = cfg.huge == HugeMode::huge || (cfg.huge == HugeMode::auto_ && hugepages_usable(64));
    if (use_huge) {
      a.emplace_back("--in-memory");
    } else {
      // --in-memory and --no-huge do not combine ("--legacy-mem is not compatible").
      for (const char* s : {"--no-huge", "-m", "512", "--no-shconf"}) a.emplace_back(s);
    }
  }
  if (cfg.vdev_only && !has_arg(raw, {"--no-pci", "-a", "--allow", "-b", "--block"})) a.emplace_back("--no-pci");
  // Telemetry would open a socket per process in a shared directory: two engines would collide.
  if (!has_arg(raw, {"--no-telemetry", "--telemetry"})) a.emplace_back("--no-telemetry");
  if (!has_arg(raw, {"--log-level"})) a.push_back("--log-level=" + std::to_string(cfg.log_level));
  a.insert(a.end(), raw.begin(), raw.end());
  return a;
}

std::unique_ptr<Eal> Eal::init(const EalConfig& cfg, std::string& err) {
  std::unique_ptr<Eal> eal(new Eal());
  eal->args_ = build_eal_args(cfg, eal->huge_);
  std::vector<std::string> storage = eal->args_;  // rte_eal_init may permute argv
  std::vector<char*> argv;
  argv.reserve(storage.size() + 1);
  for (auto& s : storage) argv.push_back(s.data());
  argv.push_back(nullptr);
  if (rte_eal_init(static_cast<int>(storage.size()), argv.data()) < 0) {
    err = std::string("EAL initialisation failed: ") + rte_strerror(rte_errno);
    if (eal->huge_) err += " (hugepages chosen: try --no-huge)";
    return nullptr;
  }
  return eal;
}

Eal::~Eal() { rte_eal_cleanup(); }

// ------------------------------------------------------------------------------------ interface check

std::string check_kernel_iface(const std::string& iface, Pmd pmd, std::string& warn) {
  if (iface.empty()) return "no interface given (--iface)";
  if (iface.size() >= IFNAMSIZ) return "interface name '" + iface + "' is too long";
  const std::string dir = "/sys/class/net/" + iface;
  if (access(dir.c_str(), F_OK) != 0) {
    return "interface '" + iface + "' does not exist (create it first, e.g. with scripts/testbed up)";
  }
  if (auto flags = read_line(dir + "/flags"); flags && !flags->empty()) {
    const unsigned long f = std::strtoul(flags->c_str(), nullptr, 16);
    if ((f & IFF_UP) == 0) return "interface '" + iface + "' is down: run 'ip link set " + iface + " up'";
  }
  if (auto carrier = read_line(dir + "/carrier"); carrier && *carrier == "0") {
    warn += "interface '" + iface + "' has no carrier (is the other veth end up?): frames will not flow yet. ";
  }
  if (auto mtu = read_line(dir + "/mtu"); mtu && !mtu->empty()) {
    const unsigned long m = std::strtoul(mtu->c_str(), nullptr, 10);
    if (pmd == Pmd::af_xdp && m > kAfXdpMaxMtu) {
      return "interface '" + iface + "' has MTU " + *mtu + ", af_xdp on veth needs <= " +
             std::to_string(kAfXdpMaxMtu) + ": run 'ip link set " + iface + " mtu 1500'";
    }
  }
  return {};
}

// --------------------------------------------------------------------------------------------- Port

std::unique_ptr<Port> Port::open(const PortConfig& cfg, EngineCounters& counters, std::string& err) {
  std::vector<Pmd> tries;
  if (cfg.pmd == Pmd::auto_) {
    tries = {Pmd::af_xdp, Pmd::af_packet};
  } else {
    tries = {cfg.pmd};
  }
  std::string errors;
  for (Pmd pmd : tries) {
    PortConfig c = cfg;
    c.pmd = pmd;
    std::unique_ptr<Port> p(new Port(c, counters));
    std::string e;
    if (p->setup(e)) {
      if (!errors.empty()) std::fprintf(stderr, "pno-engine: warning: %sfalling back to af_packet\n", errors.c_str());
      return p;
    }
    errors += e + "; ";
    p->close();
  }
  err = errors.substr(0, errors.size() - 2);
  return nullptr;
}

namespace {

/// The process's AF_XDP and AF_PACKET sockets (the kinds of socket the vdev PMDs receive on).
std::vector<int> packet_socket_fds() {
  std::vector<int> fds;
  DIR* d = opendir("/proc/self/fd");
  if (d == nullptr) return fds;
  const int self = dirfd(d);
  while (const dirent* e = readdir(d)) {
    char* end = nullptr;
    const long fd = std::strtol(e->d_name, &end, 10);
    if (end == e->d_name || *end != '\0' || fd == self) continue;
    int domain = 0;
    socklen_t len = sizeof domain;
    if (getsockopt(static_cast<int>(fd), SOL_SOCKET, SO_DOMAIN, &domain, &len) != 0) continue;
    if (domain == AF_XDP || domain == AF_PACKET) fds.push_back(static_cast<int>(fd));
  }
  closedir(d);
  std::sort(fds.begin(), fds.end());
  return fds;
}

}  // namespace

bool Port::setup(std::string& err) {
  // The PMD opens its socket(s) while the port is set up: those that appear are the rx queue's.
  const std::vector<int> sockets_before = packet_socket_fds();
  const bool vdev = cfg_.pmd == Pmd::af_xdp || cfg_.pmd == Pmd::af_packet;
  if (!(vdev ? create_vdev(err) : find_port(err))) return false;

  rte_eth_dev_info info{};
  if (const int rc = rte_eth_dev_info_get(port_id_, &info); rc != 0) {
    err = name_ + ": cannot read device info (" + std::strerror(-rc) + ")";
    return false;
  }
  driver_ = info.driver_name != nullptr ? info.driver_name : "?";

  int socket = rte_eth_dev_socket_id(port_id_);
  if (socket < 0) socket = SOCKET_ID_ANY;
  if (!create_pool(socket, err) || !configure(info, err)) return false;
  std::uint16_t nrx = cfg_.rx_desc;
  if (!setup_queues(socket, nrx, err) || !start(socket, nrx, err)) return false;
  const std::vector<int> sockets_after = packet_socket_fds();
  std::set_difference(sockets_after.begin(), sockets_after.end(), sockets_before.begin(), sockets_before.end(),
                      std::back_inserter(rx_wait_fds_));

  read_link();
  avail_at_start_ = 0;
  for (const RxQueue& r : rxq_) avail_at_start_ += rte_mempool_avail_count(r.pool);
  make_stages();
  return true;
}

bool Port::create_vdev(std::string& err) {
  std::string warn;
  if (auto e = check_kernel_iface(cfg_.iface, cfg_.pmd, warn); !e.empty()) {
    err = e;
    return false;
  }
  if (!warn.empty()) std::fprintf(stderr, "pno-engine: warning: %s\n", warn.c_str());
  std::string args;
  if (cfg_.pmd == Pmd::af_xdp) {
    // Each queue has its own fill ring of a fixed size (kAfXdpFillBuffers): more queues, more
    // frames the kernel can take while the engine is not running.
    const std::uint16_t have = kernel_rx_queues(cfg_.iface);
    rx_queues_ = cfg_.rx_queues == 0 ? std::min(have, kMaxRxQueues) : cfg_.rx_queues;
    if (rx_queues_ > have) {
      err = "interface '" + cfg_.iface + "' has " + std::to_string(have) + " rx queue(s); --rx-queues asked for " +
            std::to_string(rx_queues_);
      return false;
    }
    name_ = "net_af_xdp0";
    args = "iface=" + cfg_.iface + ",start_queue=0,queue_count=1" + kAfXdpArgs;
  } else {
    name_ = "net_af_packet0";
    args = "iface=" + cfg_.iface + ",qpairs=1";
  }
  const int rc = rte_vdev_init(name_.c_str(), args.c_str());
  if (rc < 0) {
    err = name_ + " on " + cfg_.iface + ": cannot create the device (" + std::strerror(-rc) + ")";
    return false;
  }
  vdev_created_ = true;
  if (rte_eth_dev_get_port_by_name(name_.c_str(), &port_id_) != 0) {
    err = name_ + ": device created but no port found";
    return false;
  }
  return true;
}

bool Port::find_port(std::string& err) {
  if (!rte_eth_dev_is_valid_port(cfg_.port_id)) {
    err = "no DPDK port " + std::to_string(cfg_.port_id) + " (" + std::to_string(rte_eth_dev_count_avail()) +
          " available): give one with --eal (e.g. -a PCI or --vdev) or use --iface";
    return false;
  }
  port_id_ = cfg_.port_id;
  char nm[RTE_ETH_NAME_MAX_LEN] = {};
  rte_eth_dev_get_name_by_port(port_id_, nm);
  name_ = nm;
  return true;
}

bool Port::create_pool(int socket, std::string& err) {
  // The mbufs are split between the rx queues' pools; queue 0's also serves every transmit.
  per_pool_ = std::max(4095u, (cfg_.nb_mbufs + 1) / rx_queues_ - 1);
  const std::string pool_name = "pno_mbufs_p" + std::to_string(port_id_);
  pool_ = cfg_.pmd == Pmd::af_xdp ? create_packed_pool(pool_name.c_str(), per_pool_, socket)
                                  : rte_pktmbuf_pool_create(pool_name.c_str(), per_pool_, kPoolCache, 0,
                                                            RTE_MBUF_DEFAULT_BUF_SIZE, socket);
  if (pool_ == nullptr) {
    err = "cannot create the mbuf pool (" + std::to_string(per_pool_) + " mbufs): " + rte_strerror(rte_errno);
    return false;
  }
  mbuf_room_ = RTE_MBUF_DEFAULT_DATAROOM;
  return true;
}

bool Port::configure(const rte_eth_dev_info& info, std::string& err) {
  rte_eth_conf conf{};
  if (cfg_.offloads) {
    const std::uint64_t tx_want = RTE_ETH_TX_OFFLOAD_IPV4_CKSUM | RTE_ETH_TX_OFFLOAD_TCP_CKSUM;
    const std::uint64_t rx_want = RTE_ETH_RX_OFFLOAD_IPV4_CKSUM | RTE_ETH_RX_OFFLOAD_TCP_CKSUM;
    conf.txmode.offloads = info.tx_offload_capa & tx_want;
    conf.rxmode.offloads = info.rx_offload_capa & rx_want;
    caps_.tx_ipv4_checksum = (conf.txmode.offloads & RTE_ETH_TX_OFFLOAD_IPV4_CKSUM) != 0;
    caps_.tx_tcp_checksum = (conf.txmode.offloads & RTE_ETH_TX_OFFLOAD_TCP_CKSUM) != 0;
    rx_csum_ = (conf.rxmode.offloads & rx_want) == rx_want;
  }
  if (const int rc = rte_eth_dev_configure(port_id_, 1, 1, &conf); rc != 0) {
    err = name_ + ": configure failed (" + std::strerror(-rc) + ")";
    return false;
  }
  return true;
}

bool Port::setup_queues(int socket, std::uint16_t& nrx, std::string& err) {
  std::uint16_t ntx = cfg_.tx_desc;
  rte_eth_dev_adjust_nb_rx_tx_desc(port_id_, &nrx, &ntx);
  int rc = 0;
  if ((rc = rte_eth_rx_queue_setup(port_id_, 0, nrx, static_cast<unsigned>(socket), nullptr, pool_)) != 0) {
    err = name_ + ": rx queue setup failed (" + std::strerror(-rc) + ")";
    if (cfg_.pmd == Pmd::af_xdp) err += " (af_xdp needs the interface up and MTU <= 3542)";
    return false;
  }
  switch (cfg_.pmd) {
    case Pmd::af_xdp:
      rx_buffers_ = std::min<std::uint32_t>(kAfXdpFillBuffers, nrx);  // each further queue adds its own
      break;
    case Pmd::af_packet:
      rx_buffers_ = kAfPacketFrames;
      break;
    default:
      rx_buffers_ = nrx;
      break;
  }
  if ((rc = rte_eth_tx_queue_setup(port_id_, 0, ntx, static_cast<unsigned>(socket), nullptr)) != 0) {
    err = name_ + ": tx queue setup failed (" + std::strerror(-rc) + ")";
    return false;
  }
  return true;
}

bool Port::start(int socket, std::uint16_t nrx, std::string& err) {
  if (cfg_.promiscuous) rte_eth_promiscuous_enable(port_id_);
  if (const int rc = rte_eth_dev_start(port_id_); rc != 0) {
    err = name_ + ": start failed (" + std::strerror(-rc) + ")";
    return false;
  }
  started_ = true;
  rxq_.push_back(RxQueue{port_id_, pool_, {}, false});
  for (std::uint16_t q = 1; q < rx_queues_; ++q) {
    if (!open_extra_rx(q, nrx, socket, err)) return false;
  }
  return true;
}

void Port::read_link() {
  rte_ether_addr ea{};
  rte_eth_macaddr_get(port_id_, &ea);
  std::copy(std::begin(ea.addr_bytes), std::end(ea.addr_bytes), mac_.b.begin());
  std::uint16_t mtu = 1500;
  if (rte_eth_dev_get_mtu(port_id_, &mtu) != 0) mtu = 1500;
  // The stack must never ask for a frame larger than one mbuf.
  const std::uint16_t room_mtu = static_cast<std::uint16_t>(mbuf_room_ - RTE_ETHER_HDR_LEN);
  if (mtu > room_mtu) {
    std::fprintf(stderr, "pno-engine: warning: port MTU %u exceeds one mbuf; using %u\n", mtu, room_mtu);
    mtu = room_mtu;
  }
  caps_.mtu = mtu;
}

bool Port::open_extra_rx(std::uint16_t q, std::uint16_t nrx, int socket, std::string& err) {
  // The af_xdp PMD (DPDK 22.11) opens more than one queue only on devices with "combined"
  // channels, which veth lacks; one device per queue of the same interface works everywhere.
  RxQueue r;
  r.vdev = "net_af_xdp" + std::to_string(q);
  const std::string args = "iface=" + cfg_.iface + ",start_queue=" + std::to_string(q) + ",queue_count=1" + kAfXdpArgs;
  int rc = rte_vdev_init(r.vdev.c_str(), args.c_str());
  if (rc < 0) {
    err = r.vdev + " on " + cfg_.iface + " queue " + std::to_string(q) + ": cannot create the device (" +
          std::strerror(-rc) + ")";
    return false;
  }
  // Recorded at once so close() removes it whatever fails next.
  rxq_.push_back(r);
  RxQueue& e = rxq_.back();
  if (rte_eth_dev_get_port_by_name(e.vdev.c_str(), &e.port) != 0) {
    err = e.vdev + ": device created but no port found";
    return false;
  }
  const std::string pool_name = "pno_mbufs_p" + std::to_string(port_id_) + "q" + std::to_string(q);
  e.pool = create_packed_pool(pool_name.c_str(), per_pool_, socket);
  if (e.pool == nullptr) {
    err = "cannot create the mbuf pool of rx queue " + std::to_string(q) + ": " + rte_strerror(rte_errno);
    return false;
  }
  rte_eth_conf conf{};
  std::uint16_t ntx = cfg_.tx_desc;
  if ((rc = rte_eth_dev_configure(e.port, 1, 1, &conf)) != 0 ||
      (rc = rte_eth_rx_queue_setup(e.port, 0, nrx, static_cast<unsigned>(socket), nullptr, e.pool)) != 0 ||
      (rc = rte_eth_tx_queue_setup(e.port, 0, ntx, static_cast<unsigned>(socket), nullptr)) != 0 ||
      (rc = rte_eth_dev_start(e.port)) != 0) {
    err = e.vdev + ": rx queue " + std::to_string(q) + " setup failed (" + std::strerror(-rc) + ")";
    return false;
  }
  e.started = true;
  rx_buffers_ += std::min<std::uint32_t>(kAfXdpFillBuffers, nrx);
  return true;
}

}  // namespace pno::engine
