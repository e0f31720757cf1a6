/*
 * rtpgen: the relay benchmark's load generator (npm run bench:relay compiles it with cc -O2).
 *
 * Why C: the Node generator (bench/load.ts) spends ~10 us of JS per datagram and tops out near
 * 800 G.711 calls on one core, below what the relay can forward. This one sends and receives
 * with plain syscalls on one epoll loop.
 *
 * Per call two endpoints, each by default its own UDP socket (a relay latches onto source
 * address and port), each sending one RTP packet per ptime with a real
 * sequence number, timestamp and SSRC. Bytes 12..19 of the payload carry the send time
 * (CLOCK_MONOTONIC, ns) and byte 20 says whether the packet was sent in the measured window,
 * so every packet that comes back gives its own one-way latency through the relay; one more
 * than 100 ms late is counted apart (`late`), as a phone's jitter buffer would drop it.
 *
 * Batching: with one socket per endpoint (the default), sends cannot be batched across
 * sockets (sendmmsg takes one fd, and each socket has one packet per ptime), so sendmmsg
 * batches only the packets one endpoint owes after a stall. `--sockets N` (even) lets the
 * endpoints share N sockets instead, the calls' A sides on the first half and their B sides on
 * the other (a call's two sides never share a source): each tick one sendmmsg per socket
 * carries every due endpoint's packet to its own relay port, and one recvmmsg drains up to 64;
 * an arriving packet is told apart by its SSRC (its sender's, so it is for that sender's
 * partner, which must live on that socket, or it counts as misrouted). The relay sees the same
 * packets on the same relay ports either way, only from fewer source ports. Receives are
 * batched twice: epoll_wait hands over every ready socket at once, and recvmmsg drains each.
 *
 * Protocol on stdin/stdout, so the benchmark can set up calls over ng in between:
 *   rtpgen --calls N [--addr IP] [--peer IP] [--sockets N] [--port-base P] [--warmup-ms W] [--measure-ms M] [--ptime MS] [--size B]
 *   -> "ports P0 P1 ... P(2N-1)\n"     endpoint 2i is call i's side A, 2i+1 its side B
 *   <- "targets T0 T1 ... T(2N-1)\n"   the relay port each endpoint sends to, on --peer (the relay's
 *                                      address, by default --addr); 0: its partner directly
 *   -> "measure-start\n" and "measure-end\n" as the measured window opens and closes (for the
 *      benchmark to sample the relay's CPU), then one line of JSON with the results after a drain
 *      period.
 */
#define _GNU_SOURCE
#include <errno.h>
#include <netinet/in.h>
#include <arpa/inet.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <sys/timerfd.h>
#include <time.h>
#include <unistd.h>

#define TICK_NS 1000000LL   /* 1 ms: the send loop wakes this often */
#define HIST_US 200000      /* latency histogram: 1 us buckets up to 200 ms, then one overflow bucket */
#define RX_BATCH 64
#define TX_BATCH_OWN 8     /* one socket per endpoint: what one endpoint can owe after a stall */
#define TX_BATCH_SHARED 64 /* shared sockets: one sendmmsg carries many endpoints' packets */
#define EVENTS 1024
#define DRAIN_MS 300
#define LATE_US 100000 /* later than this is as good as lost to a phone's jitter buffer */
#define MAX_PACKET 1500

/* A socket, and the packets its next sendmmsg carries (stamped with the send time just before it). */
typedef struct {
  int fd;
  uint16_t port;
  int pending, dirty;
  struct mmsghdr *m;
  struct iovec *v;
  uint8_t *buf;
} gsock;

typedef struct {
  int fd, sock; /* its socket, and that socket's index */
  uint16_t port, seq;
  uint32_t ts, ssrc;
  struct sockaddr_in to;
  int64_t next_send;   /* when the next packet is due, ns */
} endpoint;

static int64_t mono_ns(void) {
  struct timespec t;
  clock_gettime(CLOCK_MONOTONIC, &t);
  return (int64_t)t.tv_sec * 1000000000LL + t.tv_nsec;
}

static void die(const char *what) {
  fprintf(stderr, "rtpgen: %s: %s\n", what, strerror(errno));
  exit(1);
}

static void put64(uint8_t *p, uint64_t v) {
  for (int i = 7; i >= 0; i--, v >>= 8) p[i] = (uint8_t)v;
}
static uint64_t get64(const uint8_t *p) {
  uint64_t v = 0;
  for (int i = 0; i < 8; i++) v = (v << 8) | p[i];
  return v;
}
static uint32_t get32(const uint8_t *p) { return ((uint32_t)p[0] << 24) | ((uint32_t)p[1] << 16) | ((uint32_t)p[2] << 8) | p[3]; }

static uint32_t hist[HIST_US + 1];

/* Sends what a socket has pending in one sendmmsg, each packet stamped with the time it leaves. */
static void flush(gsock *g, uint64_t *send_errors) {
  if (!g->pending) return;
  uint64_t t = (uint64_t)mono_ns();
  for (int b = 0; b < g->pending; b++) put64((uint8_t *)g->v[b].iov_base + 12, t);
  int s = sendmmsg(g->fd, g->m, (unsigned)g->pending, MSG_DONTWAIT);
  if (s < g->pending) *send_errors += (uint64_t)(g->pending - (s < 0 ? 0 : s));
  g->pending = 0;
}

static double percentile(uint64_t count, double p) {
  if (count == 0) return -1;
  uint64_t want = (uint64_t)(p / 100.0 * (double)count), seen = 0;
  if (want >= count) want = count - 1;
  for (int i = 0; i <= HIST_US; i++) {
    seen += hist[i];
    if (seen > want) return i;
  }
  return HIST_US;
}

static double cpu_seconds(void) {
  struct rusage ru;
  getrusage(RUSAGE_SELF, &ru);
  return (double)ru.ru_utime.tv_sec + ru.ru_utime.tv_usec / 1e6 + (double)ru.ru_stime.tv_sec + ru.ru_stime.tv_usec / 1e6;
}

int main(int argc, char **argv) {
  int calls = 0, shared = 0, port_base = 0, warmup_ms = 1500, measure_ms = 5000, ptime = 20, size = 172;
  const char *addr = "127.0.0.1", *peer_addr = NULL;
  for (int i = 1; i + 1 < argc; i += 2) {
    const char *k = argv[i], *v = argv[i + 1];
    if (!strcmp(k, "--calls")) calls = atoi(v);
    else if (!strcmp(k, "--addr")) addr = v;
    else if (!strcmp(k, "--peer")) peer_addr = v;
    else if (!strcmp(k, "--sockets")) shared = atoi(v);
    else if (!strcmp(k, "--port-base")) port_base = atoi(v);
    else if (!strcmp(k, "--warmup-ms")) warmup_ms = atoi(v);
    else if (!strcmp(k, "--measure-ms")) measure_ms = atoi(v);
    else if (!strcmp(k, "--ptime")) ptime = atoi(v);
    else if (!strcmp(k, "--size")) size = atoi(v);
    else { fprintf(stderr, "rtpgen: unknown option %s\n", k); return 2; }
  }
  if (calls <= 0 || size < 21 || size > MAX_PACKET || ptime <= 0) {
    fprintf(stderr, "usage: rtpgen --calls N [--addr IP] [--port-base P] [--warmup-ms W] [--measure-ms M] [--ptime MS] [--size 21..1500]\n");
    return 2;
  }
  int n = calls * 2;
  if (shared < 0 || shared % 2 || shared > n) {
    fprintf(stderr, "rtpgen: --sockets must be even and at most 2 x calls (0: one per endpoint)\n");
    return 2;
  }
  /* Sockets: one per endpoint, or `shared` of them: the A sides of consecutive calls on the first
     half, the B sides on the second, so a call's two sides never share one. */
  int ns = shared ? shared : n;
  int tx_batch = shared ? TX_BATCH_SHARED : TX_BATCH_OWN;
  struct rlimit rl;
  if (getrlimit(RLIMIT_NOFILE, &rl) == 0 && rl.rlim_cur < (rlim_t)ns + 64) {
    rl.rlim_cur = rl.rlim_max;
    setrlimit(RLIMIT_NOFILE, &rl);
  }
  endpoint *eps = calloc((size_t)n, sizeof *eps);
  struct in_addr local, peer;
  if (inet_pton(AF_INET, addr, &local) != 1) { fprintf(stderr, "rtpgen: bad --addr %s\n", addr); return 2; }
  if (inet_pton(AF_INET, peer_addr ? peer_addr : addr, &peer) != 1) { fprintf(stderr, "rtpgen: bad --peer %s\n", peer_addr); return 2; }
  int next_port = port_base;
  srand((unsigned)mono_ns());
  gsock *socks = calloc((size_t)ns, sizeof *socks);
  uint8_t *txbuf = malloc((size_t)ns * (size_t)tx_batch * (size_t)size);
  struct mmsghdr *txm = calloc((size_t)ns * (size_t)tx_batch, sizeof *txm);
  struct iovec *txv = calloc((size_t)ns * (size_t)tx_batch, sizeof *txv);
  if (!socks || !txbuf || !txm || !txv) die("malloc");
  for (int k = 0; k < ns; k++) {
    gsock *g = &socks[k];
    g->m = txm + (size_t)k * (size_t)tx_batch;
    g->v = txv + (size_t)k * (size_t)tx_batch;
    g->buf = txbuf + (size_t)k * (size_t)tx_batch * (size_t)size;
    for (int b = 0; b < tx_batch; b++) {
      uint8_t *p = g->buf + (size_t)b * (size_t)size;
      memset(p, 0xd5, (size_t)size);
      p[0] = 0x80;
      p[1] = 0; /* PCMU */
    }
    g->fd = socket(AF_INET, SOCK_DGRAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
    if (g->fd < 0) die("socket");
    if (shared) {
      /* Each shared socket queues many endpoints' packets between two drains: room for them. */
      int bytes = 4 << 20;
      if (setsockopt(g->fd, SOL_SOCKET, SO_RCVBUFFORCE, &bytes, sizeof bytes) < 0) setsockopt(g->fd, SOL_SOCKET, SO_RCVBUF, &bytes, sizeof bytes);
      if (setsockopt(g->fd, SOL_SOCKET, SO_SNDBUFFORCE, &bytes, sizeof bytes) < 0) setsockopt(g->fd, SOL_SOCKET, SO_SNDBUF, &bytes, sizeof bytes);
    }
    struct sockaddr_in sa = { .sin_family = AF_INET, .sin_addr = local };
    /* Explicit ports when given, so the generator stays out of the relays' port ranges
       (ephemeral ports would land inside them); a port someone else holds is skipped. */
    for (;;) {
      sa.sin_port = htons((uint16_t)(port_base ? next_port++ : 0));
      if (bind(g->fd, (struct sockaddr *)&sa, sizeof sa) == 0) break;
      if (!port_base || errno != EADDRINUSE || next_port > 65535) die("bind");
    }
    socklen_t len = sizeof sa;
    getsockname(g->fd, (struct sockaddr *)&sa, &len);
    g->port = ntohs(sa.sin_port);
  }
  for (int i = 0; i < n; i++) {
    endpoint *e = &eps[i];
    int half = ns / 2, call = i >> 1, side = i & 1;
    e->sock = shared ? side * half + (int)((int64_t)call * half / calls) : i;
    e->fd = socks[e->sock].fd;
    e->port = socks[e->sock].port;
    e->seq = (uint16_t)rand();
    e->ts = (uint32_t)rand();
    e->ssrc = 0x10000000u + (uint32_t)i;
  }

  printf("ports");
  for (int i = 0; i < n; i++) printf(" %u", eps[i].port);
  printf("\n");
  fflush(stdout);

  char word[16];
  if (scanf("%15s", word) != 1 || strcmp(word, "targets")) { fprintf(stderr, "rtpgen: expected a targets line\n"); return 2; }
  for (int i = 0; i < n; i++) {
    int t;
    if (scanf("%d", &t) != 1 || t < 0 || t > 65535) { fprintf(stderr, "rtpgen: bad target %d\n", i); return 2; }
    eps[i].to = (struct sockaddr_in){ .sin_family = AF_INET, .sin_addr = t ? peer : local, .sin_port = htons((uint16_t)(t ? t : eps[i ^ 1].port)) };
  }

  int ep = epoll_create1(EPOLL_CLOEXEC);
  if (ep < 0) die("epoll_create1");
  for (int k = 0; k < ns; k++) {
    struct epoll_event ev = { .events = EPOLLIN, .data.u32 = (uint32_t)k };
    if (epoll_ctl(ep, EPOLL_CTL_ADD, socks[k].fd, &ev) < 0) die("epoll_ctl");
  }
  int tfd = timerfd_create(CLOCK_MONOTONIC, TFD_NONBLOCK | TFD_CLOEXEC);
  if (tfd < 0) die("timerfd_create");
  struct epoll_event tev = { .events = EPOLLIN, .data.u32 = UINT32_MAX };
  epoll_ctl(ep, EPOLL_CTL_ADD, tfd, &tev);

  int64_t ptime_ns = (int64_t)ptime * 1000000LL;
  int64_t start = mono_ns() + 10 * TICK_NS;
  /* Spread the packet train evenly over the ptime, in endpoint order, so that endpoints fall due
     in index order, cyclically: the send loop walks on from where it stopped and stops at the
     first endpoint not yet due. */
  for (int i = 0; i < n; i++) eps[i].next_send = start + (int64_t)i * ptime_ns / n;
  int64_t measure_from = start + (int64_t)warmup_ms * 1000000LL;
  int64_t measure_to = measure_from + (int64_t)measure_ms * 1000000LL;
  int64_t stop_at = measure_to + (int64_t)DRAIN_MS * 1000000LL;
  struct itimerspec its = { .it_interval = { 0, TICK_NS }, .it_value = { start / 1000000000LL, start % 1000000000LL } };
  if (timerfd_settime(tfd, TFD_TIMER_ABSTIME, &its, NULL) < 0) die("timerfd_settime");

  int *dirty = calloc((size_t)ns, sizeof *dirty), ndirty = 0;
  static uint8_t rx[RX_BATCH][MAX_PACKET];
  struct mmsghdr rxm[RX_BATCH];
  struct iovec rxv[RX_BATCH];
  struct epoll_event events[EVENTS];
  uint64_t late = 0;
  uint64_t sent = 0, sent_warmup = 0, send_errors = 0, received = 0, misrouted = 0, late_sends = 0, rx_batches = 0, rx_packets = 0;
  uint64_t *per_endpoint = calloc((size_t)n, sizeof *per_endpoint);
  int64_t worst_lag = 0;
  double cpu0 = 0, cpu1 = 0;
  int measuring = 0, done_sending = 0;
  int next_slot_ep = 0;

  for (;;) {
    int got = epoll_wait(ep, events, EVENTS, 50);
    if (got < 0 && errno != EINTR) die("epoll_wait");
    for (int k = 0; k < got; k++) {
      uint32_t sk = events[k].data.u32;
      if (sk == UINT32_MAX) continue; /* the tick: handled below */
      gsock *g = &socks[sk];
      for (;;) {
        for (int b = 0; b < RX_BATCH; b++) {
          rxv[b] = (struct iovec){ rx[b], MAX_PACKET };
          memset(&rxm[b].msg_hdr, 0, sizeof rxm[b].msg_hdr);
          rxm[b].msg_hdr.msg_iov = &rxv[b];
          rxm[b].msg_hdr.msg_iovlen = 1;
        }
        int r = recvmmsg(g->fd, rxm, RX_BATCH, MSG_DONTWAIT, NULL);
        if (r <= 0) break;
        int64_t now = mono_ns();
        rx_batches++;
        rx_packets += (uint64_t)r;
        for (int b = 0; b < r; b++) {
          const uint8_t *p = rx[b];
          if (rxm[b].msg_len != (unsigned)size || p[20] != 1) continue;
          /* Sent by endpoint `from` (its SSRC), so for its partner, which must live on this socket. */
          uint32_t from = get32(p + 8) - 0x10000000u;
          if (from >= (uint32_t)n || eps[from ^ 1].sock != (int)sk) { misrouted++; continue; }
          int64_t us = (now - (int64_t)get64(p + 12)) / 1000;
          hist[us < 0 ? 0 : us > HIST_US ? HIST_US : us]++;
          if (us > LATE_US) late++;
          received++;
          per_endpoint[from ^ 1]++;
        }
        if (r < RX_BATCH) break;
      }
    }
    int64_t now = mono_ns();
    uint64_t expirations;
    while (read(tfd, &expirations, sizeof expirations) > 0) {}
    if (!measuring && now >= measure_from) {
      measuring = 1;
      cpu0 = cpu_seconds();
      printf("measure-start\n");
      fflush(stdout);
    }
    if (!done_sending && now >= measure_to) {
      done_sending = 1;
      cpu1 = cpu_seconds();
      printf("measure-end\n");
      fflush(stdout);
    }
    if (now >= stop_at) break;
    if (done_sending) continue;
    /* Every endpoint whose packet is due, and no other. */
    for (int visited = 0; visited < n; visited++) {
      endpoint *e = &eps[next_slot_ep];
      if (e->next_send > now) break;
      gsock *g = &socks[e->sock];
      while (e->next_send <= now) {
        if (g->pending == tx_batch) flush(g, &send_errors);
        int count = g->pending++;
        uint8_t *p = g->buf + (size_t)count * (size_t)size;
        p[2] = (uint8_t)(e->seq >> 8);
        p[3] = (uint8_t)e->seq;
        p[4] = (uint8_t)(e->ts >> 24); p[5] = (uint8_t)(e->ts >> 16); p[6] = (uint8_t)(e->ts >> 8); p[7] = (uint8_t)e->ts;
        p[8] = (uint8_t)(e->ssrc >> 24); p[9] = (uint8_t)(e->ssrc >> 16); p[10] = (uint8_t)(e->ssrc >> 8); p[11] = (uint8_t)e->ssrc;
        int in_window = e->next_send >= measure_from && e->next_send < measure_to;
        p[20] = (uint8_t)in_window;
        g->v[count] = (struct iovec){ p, (size_t)size };
        memset(&g->m[count].msg_hdr, 0, sizeof g->m[count].msg_hdr);
        g->m[count].msg_hdr.msg_iov = &g->v[count];
        g->m[count].msg_hdr.msg_iovlen = 1;
        g->m[count].msg_hdr.msg_name = &e->to;
        g->m[count].msg_hdr.msg_namelen = sizeof e->to;
        int64_t lag = now - e->next_send;
        if (lag > worst_lag && in_window) worst_lag = lag;
        if (lag > 5 * TICK_NS && in_window) late_sends++;
        if (in_window) sent++;
        else if (e->next_send < measure_from) sent_warmup++;
        e->seq++;
        e->ts += (uint32_t)(ptime * 8); /* 8 kHz clock */
        e->next_send += ptime_ns;
      }
      /* One socket per endpoint: its packets leave now, as before sockets could be shared;
         shared sockets send once per tick (or when a batch is full), all at the end. */
      if (!shared) flush(g, &send_errors);
      else if (!g->dirty) {
        g->dirty = 1;
        dirty[ndirty++] = e->sock;
      }
      next_slot_ep = next_slot_ep + 1 == n ? 0 : next_slot_ep + 1;
    }
    while (ndirty) {
      gsock *g = &socks[dirty[--ndirty]];
      g->dirty = 0;
      flush(g, &send_errors);
    }
  }

  uint64_t nominal = (uint64_t)n * (uint64_t)measure_ms / (uint64_t)ptime;
  /* How evenly media came back: the lowest and highest share of any endpoint. */
  uint64_t lo = UINT64_MAX, hi = 0;
  for (int i = 0; i < n; i++) {
    if (per_endpoint[i] < lo) lo = per_endpoint[i];
    if (per_endpoint[i] > hi) hi = per_endpoint[i];
  }
  printf("{\"calls\":%d,\"endpoints\":%d,\"measure_ms\":%d,\"nominal\":%llu,\"sent\":%llu,\"received\":%llu,\"loss\":%.6f,"
         "\"late\":%llu,\"send_errors\":%llu,\"misrouted\":%llu,\"late_sends\":%llu,\"worst_send_lag_us\":%lld,"
         "\"p50_us\":%.0f,\"p99_us\":%.0f,\"p999_us\":%.0f,\"max_us\":%.0f,"
         "\"endpoint_min\":%llu,\"endpoint_max\":%llu,\"rx_per_batch\":%.2f,\"cpu_s\":%.3f}\n",
         calls, n, measure_ms, (unsigned long long)nominal, (unsigned long long)sent, (unsigned long long)received,
         sent ? 1.0 - (double)received / (double)sent : 0.0, (unsigned long long)late, (unsigned long long)send_errors, (unsigned long long)misrouted,
         (unsigned long long)late_sends, (long long)(worst_lag / 1000), percentile(received, 50), percentile(received, 99),
         percentile(received, 99.9), percentile(received, 100), (unsigned long long)lo, (unsigned long long)hi,
         rx_batches ? (double)rx_packets / (double)rx_batches : 0.0, cpu1 - cpu0);
  (void)sent_warmup;
  return 0;
}
