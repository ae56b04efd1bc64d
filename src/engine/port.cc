#include "engine/port.hh"

#include <dirent.h>
#include <linux/if_xdp.h>
#include <net/if.h>
#include <rte_bus_vdev.h>
#include <rte_eal.h>
#include <rte_errno.h>
#include <rte_ethdev.h>
#include <rte_lcore.h>
#include <rte_log.h>
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

class Port::TxOps final : public FrameOps {
 public:
  explicit TxOps(Port& p) : p_(p) {}
  void emit(rte_mbuf* m) override { p_.enqueue_tx(m); }
  void drop(rte_mbuf* m) override { p_.free_mbuf(m); }
  rte_mbuf* copy(rte_mbuf* m) override { return p_.copy_mbuf(m); }

 private:
  Port& p_;
};

class Port::RxOps final : public FrameOps {
 public:
  RxOps(Port& p, FrameHandler* h) : p_(p), h_(h) {}
  void emit(rte_mbuf* m) override {
    if (h_ != nullptr) {
      p_.deliver_rx(m, *h_);
    } else {
      p_.free_mbuf(m);
    }
  }
  void drop(rte_mbuf* m) override { p_.free_mbuf(m); }
  rte_mbuf* copy(rte_mbuf* m) override { return p_.copy_mbuf(m); }

 private:
  Port& p_;
  FrameHandler* h_;
};

Port::Port(const PortConfig& cfg, EngineCounters& counters) : cfg_(cfg), counters_(counters) {}

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
  int rc = 0;
  // The PMD opens its socket(s) while the port is set up: those that appear are the rx queue's.
  const std::vector<int> sockets_before = packet_socket_fds();
  if (cfg_.pmd == Pmd::af_xdp || cfg_.pmd == Pmd::af_packet) {
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
    rc = rte_vdev_init(name_.c_str(), args.c_str());
    if (rc < 0) {
      err = name_ + " on " + cfg_.iface + ": cannot create the device (" + std::strerror(-rc) + ")";
      return false;
    }
    vdev_created_ = true;
    if (rte_eth_dev_get_port_by_name(name_.c_str(), &port_id_) != 0) {
      err = name_ + ": device created but no port found";
      return false;
    }
  } else {
    if (!rte_eth_dev_is_valid_port(cfg_.port_id)) {
      err = "no DPDK port " + std::to_string(cfg_.port_id) + " (" + std::to_string(rte_eth_dev_count_avail()) +
            " available): give one with --eal (e.g. -a PCI or --vdev) or use --iface";
      return false;
    }
    port_id_ = cfg_.port_id;
    char nm[RTE_ETH_NAME_MAX_LEN] = {};
    rte_eth_dev_get_name_by_port(port_id_, nm);
    name_ = nm;
  }

  rte_eth_dev_info info{};
  if ((rc = rte_eth_dev_info_get(port_id_, &info)) != 0) {
    err = name_ + ": cannot read device info (" + std::strerror(-rc) + ")";
    return false;
  }
  driver_ = info.driver_name != nullptr ? info.driver_name : "?";

  int socket = rte_eth_dev_socket_id(port_id_);
  if (socket < 0) socket = SOCKET_ID_ANY;
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
  if ((rc = rte_eth_dev_configure(port_id_, 1, 1, &conf)) != 0) {
    err = name_ + ": configure failed (" + std::strerror(-rc) + ")";
    return false;
  }
  std::uint16_t nrx = cfg_.rx_desc, ntx = cfg_.tx_desc;
  rte_eth_dev_adjust_nb_rx_tx_desc(port_id_, &nrx, &ntx);
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
  if (cfg_.promiscuous) rte_eth_promiscuous_enable(port_id_);
  if ((rc = rte_eth_dev_start(port_id_)) != 0) {
    err = name_ + ": start failed (" + std::strerror(-rc) + ")";
    return false;
  }
  started_ = true;
  rxq_.push_back(RxQueue{port_id_, pool_, {}, false});
  for (std::uint16_t q = 1; q < rx_queues_; ++q) {
    if (!open_extra_rx(q, nrx, socket, err)) return false;
  }
  const std::vector<int> sockets_after = packet_socket_fds();
  std::set_difference(sockets_after.begin(), sockets_after.end(), sockets_before.begin(), sockets_before.end(),
                      std::back_inserter(rx_wait_fds_));

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
  avail_at_start_ = 0;
  for (const RxQueue& r : rxq_) avail_at_start_ += rte_mempool_avail_count(r.pool);

  tx_ops_ = std::make_unique<TxOps>(*this);
  if (cfg_.impair.active()) {
    if (cfg_.impair.on_rx) {
      rx_impair_ = std::make_unique<ImpairStage>(cfg_.impair, cfg_.impair.seed, ImpairCounterIds::rx(), counters_);
    }
    if (cfg_.impair.on_tx) {
      tx_impair_ = std::make_unique<ImpairStage>(cfg_.impair, cfg_.impair.seed ^ 0x5bd1e995u,
                                                 ImpairCounterIds::tx(), counters_);
    }
  }
  return true;
}

Port::~Port() {
  close();
  if (pool_ != nullptr) rte_mempool_free(pool_);
  for (const RxQueue& r : rxq_) {
    if (r.pool != pool_) rte_mempool_free(r.pool);
  }
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

void Port::free_mbuf(rte_mbuf* m) {
  rte_pktmbuf_free(m);
  counters_.inc(EngineCounter::mbuf_free);
}

rte_mbuf* Port::copy_mbuf(rte_mbuf* m) {
  rte_mbuf* c = rte_pktmbuf_copy(m, pool_, 0, UINT32_MAX);
  if (c != nullptr) counters_.inc(EngineCounter::mbuf_alloc);
  return c;
}

MutByteSpan Port::tx_begin(std::size_t max_len) {
  if (open_ != nullptr) tx_abort();  // a frame left open is given back rather than leaked
  if (max_len > mbuf_room_) {
    counters_.inc(EngineCounter::port_tx_too_long);
    return {};
  }
  rte_mbuf* m = rte_pktmbuf_alloc(pool_);
  if (m == nullptr) {
    counters_.inc(EngineCounter::port_tx_no_mbuf);
    return {};
  }
  counters_.inc(EngineCounter::mbuf_alloc);
  open_ = m;
  return {rte_pktmbuf_mtod(m, std::byte*), max_len};
}

void Port::tx_commit(std::size_t len, const TxMeta& meta) {
  rte_mbuf* m = open_;
  if (m == nullptr) return;
  open_ = nullptr;
  m->data_len = static_cast<std::uint16_t>(std::min<std::size_t>(len, mbuf_room_));
  m->pkt_len = m->data_len;
  if (meta.ipv4_checksum || meta.tcp_checksum) {
    m->l2_len = meta.l2_len;
    m->l3_len = meta.l3_len;
    m->ol_flags |= RTE_MBUF_F_TX_IPV4;
    if (meta.ipv4_checksum) m->ol_flags |= RTE_MBUF_F_TX_IP_CKSUM;
    if (meta.tcp_checksum) m->ol_flags |= RTE_MBUF_F_TX_TCP_CKSUM;
  }
  if (tx_impair_) {
    tx_impair_->push(m, now_, *tx_ops_);
  } else {
    enqueue_tx(m);
  }
}

void Port::tx_abort() {
  if (open_ == nullptr) return;
  free_mbuf(open_);
  open_ = nullptr;
}

void Port::enqueue_tx(rte_mbuf* m) {
  tx_pending_[tx_count_++] = m;
  if (tx_count_ == kBurst) send_burst();
}

void Port::send_burst() {
  // A full ring usually drains within a few attempts (af_xdp reaps completions inside tx_burst);
  // if it stays full the rest is dropped and counted, and TCP retransmits.
  constexpr int kMaxStalls = 64;
  std::uint16_t sent = 0;
  int stalls = 0;
  while (sent < tx_count_) {
    const std::uint16_t k = rte_eth_tx_burst(port_id_, 0, tx_pending_.data() + sent, tx_count_ - sent);
    sent += k;
    if (k == 0 && ++stalls > kMaxStalls) break;
  }
  counters_.inc(EngineCounter::mbuf_tx, sent);
  counters_.inc(EngineCounter::port_tx_frames, sent);
  tx_sent_in_flush_ += sent;
  for (std::uint16_t i = sent; i < tx_count_; ++i) {
    counters_.inc(EngineCounter::port_tx_drop_full);
    free_mbuf(tx_pending_[i]);
  }
  tx_count_ = 0;
}

void Port::deliver_rx(rte_mbuf* m, FrameHandler& h) {
  if (m->nb_segs != 1) {
    counters_.inc(EngineCounter::port_rx_drop_multiseg);
  } else {
    RxMeta meta;
    if (rx_csum_) {
      meta.ipv4_checksum_good = (m->ol_flags & RTE_MBUF_F_RX_IP_CKSUM_MASK) == RTE_MBUF_F_RX_IP_CKSUM_GOOD;
      meta.l4_checksum_good = (m->ol_flags & RTE_MBUF_F_RX_L4_CKSUM_MASK) == RTE_MBUF_F_RX_L4_CKSUM_GOOD;
    }
    h.on_frame({rte_pktmbuf_mtod(m, const std::byte*), m->data_len}, meta);
  }
  // The stack copied what it keeps: the mbuf goes straight back to the pool.
  free_mbuf(m);
}

std::size_t Port::poll_rx(Instant now, FrameHandler& h) {
  std::array<rte_mbuf*, kBurst> burst;
  std::size_t total = 0;
  for (const RxQueue& r : rxq_) total += poll_rx_queue(r.port, now, h, burst);
  return total;
}

std::size_t Port::poll_rx_queue(std::uint16_t port, Instant now, FrameHandler& h,
                                std::array<rte_mbuf*, kBurst>& burst) {
  const std::uint16_t n = rte_eth_rx_burst(port, 0, burst.data(), kBurst);
  counters_.inc(EngineCounter::mbuf_rx, n);
  counters_.inc(EngineCounter::port_rx_frames, n);
  if (rx_impair_) {
    RxOps ops(*this, &h);
    for (std::uint16_t i = 0; i < n; ++i) rx_impair_->push(burst[i], now, ops);
    rx_impair_->poll(now, ops);
  } else {
    for (std::uint16_t i = 0; i < n; ++i) deliver_rx(burst[i], h);
  }
  return n;
}

std::size_t Port::flush(Instant now) {
  now_ = now;
  if (tx_impair_) tx_impair_->poll(now, *tx_ops_);
  if (tx_count_ > 0) send_burst();
  const std::size_t sent = tx_sent_in_flush_;
  tx_sent_in_flush_ = 0;
  return sent;
}

Instant Port::next_timer() const {
  Instant t = kNever;
  if (rx_impair_) t = std::min(t, rx_impair_->next_release());
  if (tx_impair_) t = std::min(t, tx_impair_->next_release());
  return t;
}

bool Port::link_up() const {
  rte_eth_link link{};
  if (rte_eth_link_get_nowait(port_id_, &link) != 0) return false;
  return link.link_status == RTE_ETH_LINK_UP;
}

std::uint64_t Port::rx_missed() const {
  if (closed_) return 0;
  std::uint64_t missed = 0;
  for (const RxQueue& r : rxq_) {
    rte_eth_stats st{};
    if (rte_eth_stats_get(r.port, &st) == 0) missed += st.imissed;
  }
  return missed;
}

Port::XskDrops Port::xsk_drops() const {
  XskDrops d;
  if (closed_ || cfg_.pmd != Pmd::af_xdp) return d;
  for (const int fd : rx_wait_fds_) {
    xdp_statistics xs{};
    socklen_t len = sizeof xs;
    if (getsockopt(fd, SOL_XDP, XDP_STATISTICS, &xs, &len) != 0) continue;
    d.rx_ring_full += xs.rx_ring_full;
    d.fill_ring_empty += xs.rx_fill_ring_empty_descs;
  }
  return d;
}

MbufStats Port::mbuf_stats() const {
  MbufStats s;
  for (const RxQueue& r : rxq_) {
    if (r.pool == nullptr) continue;
    s.pool_size += r.pool->size;
    s.avail_now += rte_mempool_avail_count(r.pool);
  }
  s.avail_at_start = avail_at_start_;
  s.engine_in_flight = static_cast<std::int64_t>(counters_.get(EngineCounter::mbuf_rx) +
                                                 counters_.get(EngineCounter::mbuf_alloc)) -
                       static_cast<std::int64_t>(counters_.get(EngineCounter::mbuf_free) +
                                                 counters_.get(EngineCounter::mbuf_tx));
  return s;
}

void Port::close() {
  if (closed_) return;
  closed_ = true;
  rx_wait_fds_.clear();
  tx_abort();
  RxOps rx_drop(*this, nullptr);
  if (rx_impair_) rx_impair_->drain(rx_drop);
  if (tx_impair_) tx_impair_->drain(*tx_ops_);
  for (std::uint16_t i = 0; i < tx_count_; ++i) free_mbuf(tx_pending_[i]);
  tx_count_ = 0;
  for (RxQueue& r : rxq_) {
    if (r.vdev.empty()) continue;  // this port: below
    if (r.started) rte_eth_dev_stop(r.port);
    r.started = false;
    rte_eth_dev_close(r.port);
    rte_vdev_uninit(r.vdev.c_str());
  }
  if (started_) {
    // Let the PMD reap transmit completions it still holds (af_xdp keeps sent mbufs until then).
    for (int i = 0; i < 4; ++i) {
      rte_eth_tx_done_cleanup(port_id_, 0, 0);
      rte_eth_tx_burst(port_id_, 0, nullptr, 0);
    }
    rte_eth_dev_stop(port_id_);
    started_ = false;
  }
  if (vdev_created_ || pool_ != nullptr) rte_eth_dev_close(port_id_);
  if (vdev_created_) {
    rte_vdev_uninit(name_.c_str());
    vdev_created_ = false;
  }
  // pool_ lives until the destructor so mbuf_stats() can still report what came back.
}

}  // namespace pno::engine
