/*
 * fanout-floor: the least a socket-based relay can spend fanning one speaker out to N
 * listeners, as bench:rooms' yardstick for its broadcast rows (issue 12).
 *
 * Not a product: it checks nothing (no latching, no RTP validation, no control). It receives a
 * speaker's RTP on one UDP socket and sends each packet to every listener from that listener's
 * own bound UDP socket, as keylatch does (each listener's leg has its own relay port, which is
 * where its NAT was opened), each copy under the listener's own SSRC with its own sequence and
 * timestamp offsets: the same rewriting keylatch's RELAY mode does, done the cheapest way.
 *
 * How the N sends reach the kernel (--mode):
 *  - sendto         one sendto(2) per listener, to its address (what the mixer does without io_uring)
 *  - uring          io_uring: all N sends (IORING_OP_SEND with a destination address, fixed
 *                   files) queued and submitted in one io_uring_enter
 *  - connect        each listener socket connect(2)ed to its listener (the kernel keeps the
 *                   route in the socket), one send(2) each
 *  - connect-uring  connected sockets, all N sends in one io_uring_enter
 *  - mmsg1          NOT what a relay may do: every listener from one socket, sendmmsg(2) in
 *                   batches of 1024. Listeners behind NATs opened toward their own relay port
 *                   would drop these; it shows what N sockets cost over one.
 *  - packet         below UDP and IP: an AF_PACKET socket on the relay address's interface with
 *                   a PACKET_TX_RING, every listener's whole frame (Ethernet, IPv4 and UDP
 *                   headers with both checksums, from its own socket's port) written into the
 *                   ring and the lot sent with one send(2), PACKET_QDISC_BYPASS on. The N UDP
 *                   sockets stay bound (they hold the ports and would receive). Needs
 *                   CAP_NET_RAW and skips routing, neighbour resolution (the next hop's MAC is
 *                   read once from /proc/net/arp) and netfilter: a floor, not a design.
 *                   veth hands a frame to its peer's NAPI (off this core, as for UDP) only when
 *                   the sending end has TSO off or the frame comes from a UDP/TCP socket; so
 *                   this mode turns TSO off on its interface (ETHTOOL_STSO) and back on at exit.
 *  - packet-inline  the same with TSO left on: veth then runs the listeners' receive work here,
 *                   in this process's softirqs (as loopback does), and no frame waits in a ring.
 *
 * Protocol on stdin/stdout (bench/rooms-bench.ts drives it):
 *   start:                       prints "speaker PORT"
 *   "listeners P1 P2 ... Pn\n":  binds n sockets on --addr (ports from the kernel), each
 *                                sending to --peer:Pi; prints "ready"
 *   "mark\n":                    starts the measured window (clears the counters)
 *   "stats\n":                   prints one JSON line of the window's counters
 *   end of stdin:                exits
 *
 *   fanout-floor --addr RELAY_IP --peer LISTENER_IP --mode sendto|uring|connect|connect-uring|mmsg1|packet|packet-inline
 */
#define _GNU_SOURCE
#include <arpa/inet.h>
#include <errno.h>
#include <ifaddrs.h>
#include <liburing.h>
#include <linux/ethtool.h>
#include <linux/if_packet.h>
#include <linux/sockios.h>
#include <net/ethernet.h>
#include <net/if.h>
#include <sys/ioctl.h>
#include <sys/mman.h>
#include <netinet/in.h>
#include <poll.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#define PKT_MAX 1500
#define MAX_LISTENERS 30000
#define MMSG_BATCH 1024
#define BURSTS 8192

enum { M_SENDTO, M_URING, M_CONNECT, M_CONNECT_URING, M_MMSG1, M_PACKET, M_PACKET_INLINE };

typedef struct {
  int fd;
  uint16_t port; /* its socket's own, the frames' UDP source port */
  struct sockaddr_in dest;
  uint32_t ssrc;
  uint16_t seq_off;
  uint32_t ts_off;
  uint8_t buf[PKT_MAX]; /* this listener's copy: stays untouched until its send completed */
} listener;

static listener *ls;
static int n, mode;
static struct io_uring ring;
static struct mmsghdr *mm;
static struct iovec *mmiov;
static int one_fd = -1;
/* packet mode: the TX ring and the frame headers' constant parts */
static int pkt_fd = -1;
static char pkt_dev[IFNAMSIZ];
static int tso_was = -1;
static uint8_t *tx_ring;
static unsigned tx_frames, tx_frame_size, tx_next;
static uint8_t src_mac[6], dst_mac[6];
static struct in_addr src_ip, dst_ip;
static uint16_t ip_id;
static double marked, marked_bytes; /* frames (and their bytes) waiting for this fan-out's send */

/* The measured window. */
static double bursts, sends, send_errors, partial;
static double burst_ns[BURSTS];
static int burst_count;

static double now_ns(void) {
  struct timespec t;
  clock_gettime(CLOCK_MONOTONIC, &t);
  return (double)t.tv_sec * 1e9 + (double)t.tv_nsec;
}

static int bound_socket(struct in_addr addr, int *port) {
  int fd = socket(AF_INET, SOCK_DGRAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
  struct sockaddr_in sa = { .sin_family = AF_INET, .sin_addr = addr };
  socklen_t len = sizeof sa;
  if (fd < 0 || bind(fd, (struct sockaddr *)&sa, sizeof sa) < 0 || getsockname(fd, (struct sockaddr *)&sa, &len) < 0) {
    fprintf(stderr, "fanout-floor: socket: %s\n", strerror(errno));
    exit(1);
  }
  if (port) *port = ntohs(sa.sin_port);
  return fd;
}

static void wr16(uint8_t *b, uint16_t v) { b[0] = (uint8_t)(v >> 8); b[1] = (uint8_t)v; }
static void wr32(uint8_t *b, uint32_t v) { b[0] = (uint8_t)(v >> 24); b[1] = (uint8_t)(v >> 16); b[2] = (uint8_t)(v >> 8); b[3] = (uint8_t)v; }
static uint16_t rd16(const uint8_t *b) { return (uint16_t)(b[0] << 8 | b[1]); }
static uint32_t rd32(const uint8_t *b) { return (uint32_t)b[0] << 24 | (uint32_t)b[1] << 16 | (uint32_t)b[2] << 8 | b[3]; }

static uint32_t csum_add(uint32_t sum, const uint8_t *b, size_t n) {
  for (size_t i = 0; i + 1 < n; i += 2) sum += (uint32_t)(b[i] << 8 | b[i + 1]);
  if (n & 1) sum += (uint32_t)(b[n - 1] << 8);
  return sum;
}

static uint16_t csum_fold(uint32_t sum) {
  while (sum >> 16) sum = (sum & 0xffff) + (sum >> 16);
  return (uint16_t)~sum;
}

/* Listener l's packet (its rewritten copy) as a whole Ethernet frame at f; the frame's length. */
static size_t build_frame(uint8_t *f, const listener *l, size_t len) {
  memcpy(f, dst_mac, 6);
  memcpy(f + 6, src_mac, 6);
  f[12] = 0x08, f[13] = 0x00;
  uint8_t *ip = f + 14, *udp = ip + 20;
  size_t ulen = 8 + len;
  ip[0] = 0x45, ip[1] = 0;
  wr16(ip + 2, (uint16_t)(20 + ulen));
  wr16(ip + 4, ip_id++);
  wr16(ip + 6, 0x4000); /* DF */
  ip[8] = 64, ip[9] = IPPROTO_UDP;
  wr16(ip + 10, 0);
  memcpy(ip + 12, &src_ip, 4);
  memcpy(ip + 16, &dst_ip, 4);
  wr16(ip + 10, csum_fold(csum_add(0, ip, 20)));
  wr16(udp, l->port);
  memcpy(udp + 2, &l->dest.sin_port, 2);
  wr16(udp + 4, (uint16_t)ulen);
  wr16(udp + 6, 0);
  memcpy(udp + 8, l->buf, len);
  /* The UDP checksum a NIC would offload: computed here, as nothing below would. */
  uint32_t sum = csum_add(0, ip + 12, 8) + IPPROTO_UDP + (uint32_t)ulen;
  uint16_t c = csum_fold(csum_add(sum, udp, ulen));
  wr16(udp + 6, c ? c : 0xffff);
  return 14 + 20 + ulen;
}

static void count(int r, size_t len) {
  if (r == (int)len) sends++;
  else send_errors++;
}

/* One speaker packet to every listener. */
static void fan_out(const uint8_t *pkt, size_t len) {
  double t0 = now_ns();
  uint16_t seq = rd16(pkt + 2);
  uint32_t ts = rd32(pkt + 4);
  for (int i = 0; i < n; i++) {
    listener *l = &ls[i];
    memcpy(l->buf, pkt, len);
    wr16(l->buf + 2, (uint16_t)(seq + l->seq_off));
    wr32(l->buf + 4, ts + l->ts_off);
    wr32(l->buf + 8, l->ssrc);
    switch (mode) {
      case M_SENDTO:
        count((int)sendto(l->fd, l->buf, len, MSG_DONTWAIT, (struct sockaddr *)&l->dest, sizeof l->dest), len);
        break;
      case M_CONNECT:
        count((int)send(l->fd, l->buf, len, MSG_DONTWAIT), len);
        break;
      case M_URING:
      case M_CONNECT_URING: {
        struct io_uring_sqe *sqe = io_uring_get_sqe(&ring);
        io_uring_prep_send(sqe, i, l->buf, len, MSG_DONTWAIT);
        sqe->flags |= IOSQE_FIXED_FILE;
        if (mode == M_URING) io_uring_prep_send_set_addr(sqe, (struct sockaddr *)&l->dest, sizeof l->dest);
        sqe->user_data = (uint64_t)len;
        break;
      }
      case M_PACKET:
      case M_PACKET_INLINE: {
        struct tpacket2_hdr *h = (struct tpacket2_hdr *)(tx_ring + (size_t)tx_next * tx_frame_size);
        if (h->tp_status != TP_STATUS_AVAILABLE) { /* still the kernel's: a ring too small for the fan-out */
          send_errors++;
          break;
        }
        tx_next = (tx_next + 1) % tx_frames;
        h->tp_len = (uint32_t)build_frame((uint8_t *)h + TPACKET2_HDRLEN - sizeof(struct sockaddr_ll), l, len);
        h->tp_status = TP_STATUS_SEND_REQUEST;
        marked++;
        marked_bytes += h->tp_len;
        break;
      }
      case M_MMSG1:
        mmiov[i] = (struct iovec){ l->buf, len };
        memset(&mm[i], 0, sizeof mm[i]);
        mm[i].msg_hdr.msg_name = &l->dest;
        mm[i].msg_hdr.msg_namelen = sizeof l->dest;
        mm[i].msg_hdr.msg_iov = &mmiov[i];
        mm[i].msg_hdr.msg_iovlen = 1;
        break;
    }
  }
  if (mode == M_URING || mode == M_CONNECT_URING) {
    /* One enter for the whole fan-out; UDP sends on non-blocking sockets complete inline. */
    int submitted = io_uring_submit(&ring);
    if (submitted != n) partial++;
    struct io_uring_cqe *cqe;
    unsigned head, seen = 0;
    io_uring_for_each_cqe(&ring, head, cqe) {
      seen++;
      count(cqe->res, (size_t)cqe->user_data);
    }
    io_uring_cq_advance(&ring, seen);
  } else if (mode == M_PACKET || mode == M_PACKET_INLINE) {
    /* One send(2) transmits every frame marked for sending; returns the bytes sent. */
    ssize_t r = send(pkt_fd, NULL, 0, MSG_DONTWAIT);
    if (r == (ssize_t)marked_bytes) sends += marked;
    else send_errors += marked;
    marked = 0;
    marked_bytes = 0;
  } else if (mode == M_MMSG1) {
    for (int at = 0; at < n;) {
      int want = n - at < MMSG_BATCH ? n - at : MMSG_BATCH;
      int r = sendmmsg(one_fd, mm + at, (unsigned)want, MSG_DONTWAIT);
      if (r <= 0) { /* the message at `at` failed: count it and go on with the next */
        send_errors++;
        at++;
        continue;
      }
      sends += r;
      at += r;
    }
  }
  double dt = now_ns() - t0;
  bursts++;
  burst_ns[burst_count++ % BURSTS] = dt;
}

static int cmp(const void *a, const void *b) {
  double x = *(const double *)a, y = *(const double *)b;
  return x < y ? -1 : x > y;
}

static void print_stats(void) {
  int k = burst_count < BURSTS ? burst_count : BURSTS;
  qsort(burst_ns, (size_t)k, sizeof *burst_ns, cmp);
  double sum = 0;
  for (int i = 0; i < k; i++) sum += burst_ns[i];
  printf("{\"bursts\":%.0f,\"sends\":%.0f,\"errors\":%.0f,\"partialSubmits\":%.0f,\"burstMeanMs\":%.4f,\"burstP50Ms\":%.4f,\"burstP99Ms\":%.4f,\"burstMaxMs\":%.4f}\n",
         bursts, sends, send_errors, partial, k ? sum / k / 1e6 : 0, k ? burst_ns[k / 2] / 1e6 : 0, k ? burst_ns[(k * 99) / 100] / 1e6 : 0, k ? burst_ns[k - 1] / 1e6 : 0);
  fflush(stdout);
}

/* The interface that holds addr: its index and MAC (zero for loopback). */
static int interface_of(struct in_addr addr) {
  struct ifaddrs *all, *a;
  int index = 0;
  if (getifaddrs(&all) < 0) return 0;
  for (a = all; a; a = a->ifa_next) {
    if (!a->ifa_addr || a->ifa_addr->sa_family != AF_INET || ((struct sockaddr_in *)a->ifa_addr)->sin_addr.s_addr != addr.s_addr) continue;
    index = (int)if_nametoindex(a->ifa_name);
    snprintf(pkt_dev, sizeof pkt_dev, "%s", a->ifa_name);
    struct ifreq ifr = { 0 };
    snprintf(ifr.ifr_name, sizeof ifr.ifr_name, "%s", a->ifa_name);
    int s = socket(AF_INET, SOCK_DGRAM, 0);
    if (ioctl(s, SIOCGIFHWADDR, &ifr) == 0) memcpy(src_mac, ifr.ifr_hwaddr.sa_data, 6);
    close(s);
    break;
  }
  freeifaddrs(all);
  return index;
}

/* The peer's MAC from this namespace's ARP table, asking for it (one datagram to its discard port) when absent. */
static int peer_mac(struct in_addr peer) {
  if (peer.s_addr == src_ip.s_addr || (ntohl(peer.s_addr) >> 24) == 127) return 1; /* loopback: zeros */
  char want[INET_ADDRSTRLEN];
  inet_ntop(AF_INET, &peer, want, sizeof want);
  for (int tries = 0; tries < 50; tries++) {
    FILE *f = fopen("/proc/net/arp", "r");
    char line[256], ip[64], mac[64];
    unsigned flags;
    while (f && fgets(line, sizeof line, f)) {
      if (sscanf(line, "%63s %*s %x %63s", ip, &flags, mac) == 3 && !strcmp(ip, want) && (flags & 2)) {
        unsigned m[6];
        if (sscanf(mac, "%x:%x:%x:%x:%x:%x", &m[0], &m[1], &m[2], &m[3], &m[4], &m[5]) == 6) {
          for (int i = 0; i < 6; i++) dst_mac[i] = (uint8_t)m[i];
          fclose(f);
          return 1;
        }
      }
    }
    if (f) fclose(f);
    int s = socket(AF_INET, SOCK_DGRAM, 0);
    struct sockaddr_in d = { .sin_family = AF_INET, .sin_port = htons(9), .sin_addr = peer };
    sendto(s, "", 0, 0, (struct sockaddr *)&d, sizeof d);
    close(s);
    usleep(20000);
  }
  return 0;
}

/* TSO on dev on or off (ETHTOOL_STSO); its former setting, or -1. */
static int set_tso(int on) {
  int s = socket(AF_INET, SOCK_DGRAM, 0);
  struct ethtool_value v = { .cmd = ETHTOOL_GTSO };
  struct ifreq ifr = { .ifr_data = (char *)&v };
  snprintf(ifr.ifr_name, sizeof ifr.ifr_name, "%s", pkt_dev);
  int was = ioctl(s, SIOCETHTOOL, &ifr) == 0 ? (int)v.data : -1;
  v = (struct ethtool_value){ .cmd = ETHTOOL_STSO, .data = (uint32_t)on };
  if (was >= 0 && was != on && ioctl(s, SIOCETHTOOL, &ifr) < 0) was = -1;
  close(s);
  return was;
}

static void restore_tso(void) {
  if (tso_was > 0) set_tso(1);
}

static void packet_setup(struct in_addr addr, struct in_addr peer) {
  src_ip = addr;
  dst_ip = peer;
  int index = interface_of(addr);
  if (!index || !peer_mac(peer)) {
    fprintf(stderr, "fanout-floor: packet mode: no interface for the address, or no MAC for the peer\n");
    exit(1);
  }
  if (mode == M_PACKET && strcmp(pkt_dev, "lo")) {
    tso_was = set_tso(0);
    atexit(restore_tso);
  }
  pkt_fd = socket(AF_PACKET, SOCK_RAW, 0); /* protocol 0: receives nothing */
  int v = TPACKET_V2, one = 1;
  struct sockaddr_ll ll = { .sll_family = AF_PACKET, .sll_protocol = htons(ETH_P_IP), .sll_ifindex = index };
  tx_frame_size = 512;
  unsigned per_block = 4096 / tx_frame_size, blocks = ((unsigned)n + per_block - 1) / per_block;
  struct tpacket_req req = { .tp_block_size = 4096, .tp_block_nr = blocks, .tp_frame_size = tx_frame_size, .tp_frame_nr = blocks * per_block };
  if (pkt_fd < 0 || setsockopt(pkt_fd, SOL_PACKET, PACKET_VERSION, &v, sizeof v) < 0 || setsockopt(pkt_fd, SOL_PACKET, PACKET_QDISC_BYPASS, &one, sizeof one) < 0 ||
      setsockopt(pkt_fd, SOL_PACKET, PACKET_TX_RING, &req, sizeof req) < 0 || bind(pkt_fd, (struct sockaddr *)&ll, sizeof ll) < 0) {
    fprintf(stderr, "fanout-floor: packet socket: %s\n", strerror(errno));
    exit(1);
  }
  tx_frames = req.tp_frame_nr;
  tx_ring = mmap(NULL, (size_t)blocks * 4096, PROT_READ | PROT_WRITE, MAP_SHARED, pkt_fd, 0);
  if (tx_ring == MAP_FAILED) {
    fprintf(stderr, "fanout-floor: packet ring: %s\n", strerror(errno));
    exit(1);
  }
}

static void setup(char *line, struct in_addr addr, struct in_addr peer) {
  int cap = 1024;
  int *ports = malloc(sizeof *ports * (size_t)cap);
  n = 0;
  for (char *tok = strtok(line, " \n"); tok; tok = strtok(NULL, " \n")) {
    if (n == cap) ports = realloc(ports, sizeof *ports * (size_t)(cap *= 2));
    ports[n++] = atoi(tok);
  }
  if (n > MAX_LISTENERS) {
    fprintf(stderr, "fanout-floor: at most %d listeners\n", MAX_LISTENERS);
    exit(2);
  }
  struct rlimit rl;
  if (getrlimit(RLIMIT_NOFILE, &rl) == 0 && rl.rlim_cur < (rlim_t)n + 64) {
    rl.rlim_cur = rl.rlim_max;
    setrlimit(RLIMIT_NOFILE, &rl);
  }
  ls = calloc((size_t)n, sizeof *ls);
  int *fds = malloc(sizeof *fds * (size_t)n);
  if (mode == M_MMSG1) {
    one_fd = bound_socket(addr, NULL);
    mm = calloc((size_t)n, sizeof *mm);
    mmiov = calloc((size_t)n, sizeof *mmiov);
  }
  for (int i = 0; i < n; i++) {
    listener *l = &ls[i];
    l->dest = (struct sockaddr_in){ .sin_family = AF_INET, .sin_port = htons((uint16_t)ports[i]), .sin_addr = peer };
    l->ssrc = 0x10000000u + (uint32_t)i;
    l->seq_off = (uint16_t)(i * 7919);
    l->ts_off = (uint32_t)i * 104729u;
    /* Every mode binds its N sockets (mmsg1 too, so the kernel holds as many sockets): only mmsg1 sends from one other. */
    int port;
    l->fd = bound_socket(addr, &port);
    l->port = (uint16_t)port;
    if ((mode == M_CONNECT || mode == M_CONNECT_URING) && connect(l->fd, (struct sockaddr *)&l->dest, sizeof l->dest) < 0) {
      fprintf(stderr, "fanout-floor: connect: %s\n", strerror(errno));
      exit(1);
    }
    fds[i] = l->fd;
  }
  if (mode == M_URING || mode == M_CONNECT_URING) {
    unsigned entries = 1;
    while (entries < (unsigned)n) entries <<= 1;
    struct io_uring_params p = { .flags = IORING_SETUP_CQSIZE | IORING_SETUP_SINGLE_ISSUER | IORING_SETUP_COOP_TASKRUN, .cq_entries = entries * 2 };
    int r = io_uring_queue_init_params(entries, &ring, &p);
    if (r < 0) {
      p.flags = IORING_SETUP_CQSIZE;
      r = io_uring_queue_init_params(entries, &ring, &p);
    }
    if (r < 0 || io_uring_register_files(&ring, fds, (unsigned)n) < 0) {
      fprintf(stderr, "fanout-floor: io_uring: %s\n", strerror(r < 0 ? -r : errno));
      exit(1);
    }
  }
  if (mode == M_PACKET || mode == M_PACKET_INLINE) packet_setup(addr, peer);
  free(fds);
  free(ports);
}

int main(int argc, char **argv) {
  const char *addr_s = "127.0.0.1", *peer_s = "127.0.0.1", *mode_s = "sendto";
  for (int i = 1; i + 1 < argc; i += 2) {
    if (!strcmp(argv[i], "--addr")) addr_s = argv[i + 1];
    else if (!strcmp(argv[i], "--peer")) peer_s = argv[i + 1];
    else if (!strcmp(argv[i], "--mode")) mode_s = argv[i + 1];
  }
  static const char *names[] = { "sendto", "uring", "connect", "connect-uring", "mmsg1", "packet", "packet-inline" };
  mode = -1;
  for (int i = 0; i < 7; i++)
    if (!strcmp(mode_s, names[i])) mode = i;
  struct in_addr addr, peer;
  if (mode < 0 || inet_pton(AF_INET, addr_s, &addr) != 1 || inet_pton(AF_INET, peer_s, &peer) != 1) {
    fprintf(stderr, "usage: fanout-floor --addr IP --peer IP --mode sendto|uring|connect|connect-uring|mmsg1|packet|packet-inline\n");
    return 2;
  }
  int speaker_port;
  int speaker = bound_socket(addr, &speaker_port);
  printf("speaker %d\n", speaker_port);
  fflush(stdout);

  size_t cap = 1 << 20;
  char *line = malloc(cap);
  static uint8_t pkt[PKT_MAX];
  FILE *in = stdin;
  for (;;) {
    struct pollfd pf[2] = { { .fd = 0, .events = POLLIN }, { .fd = speaker, .events = POLLIN } };
    if (poll(pf, ls ? 2 : 1, -1) < 0) {
      if (errno == EINTR) continue;
      return 1;
    }
    if (pf[0].revents) {
      ssize_t got = getline(&line, &cap, in);
      if (got <= 0) return 0;
      if (!strncmp(line, "listeners ", 10)) {
        setup(line + 10, addr, peer);
        printf("ready\n");
        fflush(stdout);
      } else if (!strncmp(line, "mark", 4)) {
        bursts = sends = send_errors = partial = 0;
        burst_count = 0;
      } else if (!strncmp(line, "stats", 5)) {
        print_stats();
      }
    }
    if (ls && pf[1].revents) {
      /* One packet, then poll again: a fan-out that falls behind still hears "mark" and "stats" in time. */
      ssize_t r = recv(speaker, pkt, sizeof pkt, MSG_DONTWAIT);
      if (r >= 12) fan_out(pkt, (size_t)r);
    }
  }
}
