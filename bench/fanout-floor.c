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
 *
 * Protocol on stdin/stdout (bench/rooms-bench.ts drives it):
 *   start:                       prints "speaker PORT"
 *   "listeners P1 P2 ... Pn\n":  binds n sockets on --addr (ports from the kernel), each
 *                                sending to --peer:Pi; prints "ready"
 *   "mark\n":                    starts the measured window (clears the counters)
 *   "stats\n":                   prints one JSON line of the window's counters
 *   end of stdin:                exits
 *
 *   fanout-floor --addr RELAY_IP --peer LISTENER_IP --mode sendto|uring|connect|connect-uring|mmsg1
 */
#define _GNU_SOURCE
#include <arpa/inet.h>
#include <errno.h>
#include <liburing.h>
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

enum { M_SENDTO, M_URING, M_CONNECT, M_CONNECT_URING, M_MMSG1 };

typedef struct {
  int fd;
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
  } else if (mode == M_MMSG1) {
    for (int at = 0; at < n;) {
      int want = n - at < MMSG_BATCH ? n - at : MMSG_BATCH;
      int r = sendmmsg(one_fd, mm + at, (unsigned)want, MSG_DONTWAIT);
      if (r <= 0) {
        send_errors += n - at;
        break;
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
    l->fd = bound_socket(addr, NULL);
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
  static const char *names[] = { "sendto", "uring", "connect", "connect-uring", "mmsg1" };
  mode = -1;
  for (int i = 0; i < 5; i++)
    if (!strcmp(mode_s, names[i])) mode = i;
  struct in_addr addr, peer;
  if (mode < 0 || inet_pton(AF_INET, addr_s, &addr) != 1 || inet_pton(AF_INET, peer_s, &peer) != 1) {
    fprintf(stderr, "usage: fanout-floor --addr IP --peer IP --mode sendto|uring|connect|connect-uring|mmsg1\n");
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
      for (;;) {
        ssize_t r = recv(speaker, pkt, sizeof pkt, MSG_DONTWAIT);
        if (r < 0) break;
        if (r >= 12) fan_out(pkt, (size_t)r);
      }
    }
  }
}
