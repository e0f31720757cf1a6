/*
 * keylatch media fast path.
 *
 * Why this exists: in Node, every datagram costs a C++ -> JS callback with a fresh Buffer
 * and rinfo object (~10 us here), and every send another ~8 us of JS and C++ glue; a pure
 * dgram relay measured ~1.5x rtpengine's CPU per packet. This module owns the relay's UDP
 * sockets, polls them on Node's own libuv loop (no threads, no locks), and forwards packets
 * from a *latched* source entirely in C, batched with recvmmsg.
 *
 * It makes no decisions. Which source is latched, where media goes and whether a
 * destination is allowed are all decided in TypeScript (src/media) and pushed down here.
 * Everything else (STUN, unknown sources, malformed input) goes up to JS unchanged.
 */

#define _GNU_SOURCE
#include <arpa/inet.h>
#include <errno.h>
#include <fcntl.h>
#include <math.h>
#include <netinet/in.h>
#include <node_api.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/socket.h>
#include <sys/timerfd.h>
#include <time.h>
#include <unistd.h>
#include <uv.h>
#ifdef KEYLATCH_IO_URING
#include <liburing.h>
#include <sys/eventfd.h>
#include <sys/mman.h>
#include <sys/resource.h>
#endif

#include "fastpath.h"

#define MAX_SOCKETS 65536
#define BATCH 32
#define MAX_DATAGRAM 4096
#define MAX_ROUNDS 8 /* recvmmsg rounds per wakeup, so one busy socket cannot starve the loop */
#define MAX_DROPOUT 3000
#define MAX_MISORDER 100

typedef struct {
  int have;
  uint32_t ssrc;
  uint16_t base_seq, max_seq;
  uint32_t cycles;
  double received;
  double transit, jitter;
  uint32_t clock_rate;
} rtp_stats;

struct ksock {
  int id, fd, family, is_rtcp, closing;
  /* Which path receives for it (see "io_uring" below): 1 the ring's multishot recvmsg, 0 the epoll set. */
  int uring;
  uint32_t gen;   /* distinguishes this socket from a later one with the same id, in ring completions */
  int armed;      /* a multishot receive is in the kernel */
  int rearm;      /* its multishot ended: arm it again at the end of this drain */
  int arm_errors; /* consecutive ends without a datagram: after a few it moves to the epoll set */
  int fixed;      /* holds slot `slot` of the ring's file table (see slot_free) */
  int slot;
  napi_env env;
  napi_ref on_packet;
  int has_latched;
  struct sockaddr_storage latched;
  int has_dest;
  struct sockaddr_storage dest;
  socklen_t dest_len;
  int out_rtp, out_rtcp;
  double packets_in, bytes_in, packets_out, bytes_out, no_destination, send_errors;
  double last_seen;
  int have_ssrc;
  uint32_t ssrc;
  rtp_stats rtp;
  /* Set by native/mixer.c for a room participant: accepted media goes there, not to the outputs. */
  ks_media_hook hook;
  ks_close_hook on_close;
  void *hook_ctx;
};

static ksock *table[MAX_SOCKETS];
static int next_id = 1;
/* One async context for every socket: they are all the same kind of resource. */
static napi_async_context media_context;

/*
 * Readiness. Every socket is in one epoll set of our own, and libuv watches only that set's fd
 * (and a timerfd): one wakeup of the loop drains every ready socket, and libuv keeps no
 * per-socket state. With a poll interval (media.pollIntervalUs, setPollInterval), after a
 * drain the set is not watched again at once: the timerfd wakes the loop `poll_interval_us`
 * later to drain whatever arrived meanwhile, as long as something keeps arriving; a drain that
 * finds nothing goes back to waiting on the set. Under steady media the relay then wakes a
 * fixed number of times per second whatever the packet rate, and each wakeup carries many
 * packets, so the cost of waking (the context switch, epoll, libuv's turn) is shared; the price
 * is up to one interval of added latency. 0 is purely event-driven: one wakeup per burst.
 */
static int ep_fd = -1, timer_fd = -1;
static uv_poll_t ep_poll, timer_poll;
static int ep_watching, timer_armed;
static int open_count;
static long poll_interval_us = 0;
/* Sockets closed from JS while a drain runs: freed when it ends (the drain may still hold them). */
static int draining;
static ksock **graveyard;
static int graveyard_len, graveyard_cap;

/* recvmmsg scratch, shared: the loop is single-threaded and never re-entered mid-batch. */
static uint8_t bufs[BATCH][MAX_DATAGRAM];
static struct mmsghdr msgs[BATCH];
static struct iovec iovs[BATCH];
static struct sockaddr_storage froms[BATCH];

static double now_ms(void) {
  struct timespec ts;
  clock_gettime(CLOCK_REALTIME, &ts);
  return (double)ts.tv_sec * 1000.0 + (double)ts.tv_nsec / 1e6;
}

static uint16_t rd16(const uint8_t *p) { return (uint16_t)((p[0] << 8) | p[1]); }
static uint32_t rd32(const uint8_t *p) { return ((uint32_t)p[0] << 24) | ((uint32_t)p[1] << 16) | ((uint32_t)p[2] << 8) | p[3]; }

static ksock *lookup(int id) { return id > 0 && id < MAX_SOCKETS ? table[id] : NULL; }

/* ---- packet checks: the same rules as src/media/packet.ts (both are covered by test/relay) ---- */

static int valid_rtp(const uint8_t *b, size_t n) {
  size_t header = 12 + (size_t)(b[0] & 0x0f) * 4;
  if (n < header) return 0;
  if (b[0] & 0x10) {
    if (n < header + 4) return 0;
    header += 4 + (size_t)rd16(b + header + 2) * 4;
    if (n < header) return 0;
  }
  return 1;
}

static int valid_rtcp(const uint8_t *b, size_t n) {
  size_t at = 0;
  while (at < n) {
    if (at + 4 > n || (b[at] >> 6) != 2) return 0;
    size_t next = at + ((size_t)rd16(b + at + 2) + 1) * 4;
    if (next > n) return 0;
    at = next;
  }
  return at == n && n >= 8;
}

/* 1 = RTP, 2 = RTCP, 0 = anything else (left to JS). */
static int media_class(const uint8_t *b, size_t n) {
  if (n < 2 || b[0] < 128 || b[0] > 191) return 0;
  int pt = b[1] & 0x7f;
  if (pt >= 64 && pt <= 95) return valid_rtcp(b, n) ? 2 : 0;
  return valid_rtp(b, n) ? 1 : 0;
}

/* ---- RFC 3550 A.1 and A.8 ---- */

static void rtp_restart(rtp_stats *st, uint32_t ssrc, uint16_t seq) {
  st->have = 1;
  st->ssrc = ssrc;
  st->base_seq = st->max_seq = seq;
  st->cycles = 0;
  st->received = 0;
  st->jitter = 0;
}

static void rtp_update(rtp_stats *st, const uint8_t *b, double arrival_ms) {
  uint32_t ssrc = rd32(b + 8);
  uint16_t seq = rd16(b + 2);
  if (!st->have || ssrc != st->ssrc) rtp_restart(st, ssrc, seq);
  uint16_t delta = (uint16_t)(seq - st->max_seq);
  if (delta > 0 && delta < MAX_DROPOUT) {
    if (seq < st->max_seq) st->cycles += 65536;
    st->max_seq = seq;
  } else if (delta != 0 && delta <= 65536 - MAX_MISORDER) {
    rtp_restart(st, ssrc, seq);
  }
  st->received++;
  double transit = arrival_ms * st->clock_rate / 1000.0 - (double)rd32(b + 4);
  if (st->received > 1) st->jitter += (fabs(transit - st->transit) - st->jitter) / 16.0;
  st->transit = transit;
}

/* ---- forwarding ---- */

static int same_source(const struct sockaddr_storage *a, const struct sockaddr_storage *b) {
  if (a->ss_family != b->ss_family) return 0;
  if (a->ss_family == AF_INET) {
    const struct sockaddr_in *x = (const void *)a, *y = (const void *)b;
    return x->sin_port == y->sin_port && x->sin_addr.s_addr == y->sin_addr.s_addr;
  }
  const struct sockaddr_in6 *x = (const void *)a, *y = (const void *)b;
  return x->sin6_port == y->sin6_port && memcmp(&x->sin6_addr, &y->sin6_addr, 16) == 0;
}

/*
 * Sends waiting to leave through one output socket: the accepted packets of one recvmmsg
 * batch. All packets of a batch come from one socket and its one latched source, so they all
 * leave through the same partner socket toward the same destination, in one syscall. The
 * batch is flushed before any packet goes up to JS (which may rewire sockets) and before the
 * receive buffers are reused. Below saturation a batch is one packet; under backlog they grow,
 * and so the relay gets cheaper per packet exactly when it is short of CPU.
 */
static struct mmsghdr out_msgs[BATCH];
static struct iovec out_iovs[BATCH];
static ksock *out_sock;
static int out_count;
/* How a batch leaves (media.sendBatching, via setSendBatching): 0 one sendto per packet,
   1 sendmmsg, 2 one UDP GSO send (UDP_SEGMENT) when the packets are the same size. */
static int send_mode = 2;

#ifndef UDP_SEGMENT
#define UDP_SEGMENT 103
#endif
#ifndef SOL_UDP
#define SOL_UDP 17
#endif

static void count_sent(ksock *o, ssize_t sent, size_t n) {
  if (sent == (ssize_t)n) {
    o->packets_out++;
    o->bytes_out += (double)n;
  } else {
    o->send_errors++;
  }
}

/* One sendmsg with UDP_SEGMENT for a run of equal-sized packets (the last may be shorter). 0 if not applicable. */
static int send_gso(ksock *o) {
  size_t seg = out_iovs[0].iov_len, total = 0;
  for (int i = 0; i < out_count; i++) {
    size_t len = out_iovs[i].iov_len;
    if (len > seg || (len < seg && i != out_count - 1)) return 0;
    total += len;
  }
  if (out_count < 2 || total > 65000) return 0;
  char control[CMSG_SPACE(sizeof(uint16_t))];
  memset(control, 0, sizeof control);
  struct msghdr m = { .msg_name = &o->dest, .msg_namelen = o->dest_len, .msg_iov = out_iovs, .msg_iovlen = (size_t)out_count,
                      .msg_control = control, .msg_controllen = sizeof control };
  struct cmsghdr *c = CMSG_FIRSTHDR(&m);
  c->cmsg_level = SOL_UDP;
  c->cmsg_type = UDP_SEGMENT;
  c->cmsg_len = CMSG_LEN(sizeof(uint16_t));
  uint16_t size = (uint16_t)seg;
  memcpy(CMSG_DATA(c), &size, sizeof size);
  ssize_t sent = sendmsg(o->fd, &m, MSG_DONTWAIT);
  if (sent < 0 && (errno == EINVAL || errno == EIO || errno == ENOPROTOOPT || errno == EOPNOTSUPP)) {
    send_mode = 1; /* no GSO here: batches go by sendmmsg from now on */
    return 0;
  }
  for (int i = 0; i < out_count; i++) count_sent(o, sent == (ssize_t)total ? (ssize_t)out_iovs[i].iov_len : -1, out_iovs[i].iov_len);
  return 1;
}

static void flush_out(void) {
  ksock *o = out_sock;
  int n = out_count;
  out_count = 0;
  out_sock = NULL;
  if (!n) return;
  if (send_mode == 0 || n == 1) {
    for (int i = 0; i < n; i++) count_sent(o, sendto(o->fd, out_iovs[i].iov_base, out_iovs[i].iov_len, MSG_DONTWAIT, (struct sockaddr *)&o->dest, o->dest_len), out_iovs[i].iov_len);
    return;
  }
  if (send_mode == 2) {
    out_count = n;
    int done = send_gso(o);
    out_count = 0;
    if (done) return;
  }
  for (int i = 0; i < n; i++) {
    memset(&out_msgs[i].msg_hdr, 0, sizeof out_msgs[i].msg_hdr);
    out_msgs[i].msg_hdr.msg_name = &o->dest;
    out_msgs[i].msg_hdr.msg_namelen = o->dest_len;
    out_msgs[i].msg_hdr.msg_iov = &out_iovs[i];
    out_msgs[i].msg_hdr.msg_iovlen = 1;
  }
  int at = 0;
  while (at < n) {
    int r = sendmmsg(o->fd, out_msgs + at, (unsigned)(n - at), MSG_DONTWAIT);
    if (r <= 0) { /* the message at `at` failed: count it, go on with the rest */
      o->send_errors++;
      at++;
      continue;
    }
    for (int i = at; i < at + r; i++) count_sent(o, (ssize_t)out_msgs[i].msg_len, out_iovs[i].iov_len);
    at += r;
  }
}

static int ring_queue_send(ksock *o, const uint8_t *b, size_t n, int bid);

/* An accepted packet: count it, keep statistics, send it on toward the other leg (now, or in
   the batch when `batched`; b must then stay valid until flush_out). With `bid` >= 0, b is the
   ring's receive buffer bid and the send is queued on the ring: 1 then means the send holds the
   buffer until it completes; 0 that the caller may give it back at once. */
static int accept_packet(ksock *s, const uint8_t *b, size_t n, int cls, double now, int batched, int bid) {
  s->last_seen = now;
  if (cls == 1) {
    s->ssrc = rd32(b + 8);
    s->have_ssrc = 1;
    rtp_update(&s->rtp, b, now);
  } else if (s->is_rtcp) {
    s->ssrc = rd32(b + 4);
    s->have_ssrc = 1;
  }
  if (s->hook) {
    s->hook(s->hook_ctx, b, n, cls, now);
    return 0;
  }
  ksock *o = lookup(cls == 2 ? s->out_rtcp : s->out_rtp);
  if (!o || !o->has_dest) {
    s->no_destination++;
    return 0;
  }
  if (bid >= 0) return ring_queue_send(o, b, n, bid);
  if (!batched) {
    count_sent(o, sendto(o->fd, b, n, MSG_DONTWAIT, (struct sockaddr *)&o->dest, o->dest_len), n);
    return 0;
  }
  if (out_sock != o) flush_out();
  out_sock = o;
  out_iovs[out_count].iov_base = (void *)b;
  out_iovs[out_count].iov_len = n;
  out_count++;
  return 0;
}

static void address_string(const struct sockaddr_storage *a, char *out, size_t len, int *port) {
  if (a->ss_family == AF_INET) {
    const struct sockaddr_in *v4 = (const void *)a;
    inet_ntop(AF_INET, &v4->sin_addr, out, (socklen_t)len);
    *port = ntohs(v4->sin_port);
  } else {
    const struct sockaddr_in6 *v6 = (const void *)a;
    inet_ntop(AF_INET6, &v6->sin6_addr, out, (socklen_t)len);
    *port = ntohs(v6->sin6_port);
  }
}

/* ---- what native/mixer.c uses (fastpath.h) ---- */

ksock *ks_lookup(int id) { return lookup(id); }

void ks_set_hook(ksock *s, ks_media_hook hook, ks_close_hook on_close, void *ctx) {
  s->hook = hook;
  s->on_close = hook ? on_close : NULL;
  s->hook_ctx = hook ? ctx : NULL;
}

int ks_send_out(ksock *s, const uint8_t *b, size_t n) {
  if (!s->has_dest) {
    s->no_destination++;
    return 0;
  }
  if (sendto(s->fd, b, n, MSG_DONTWAIT, (struct sockaddr *)&s->dest, s->dest_len) != (ssize_t)n) {
    s->send_errors++;
    return 0;
  }
  s->packets_out++;
  s->bytes_out += (double)n;
  return 1;
}

int ks_send_target(ksock *s, int *fd, const struct sockaddr_storage **dest, socklen_t *dest_len) {
  if (!s->has_dest) {
    s->no_destination++;
    return 0;
  }
  *fd = s->fd;
  *dest = &s->dest;
  *dest_len = s->dest_len;
  return 1;
}

void ks_count_send(ksock *s, size_t n, int ok) { count_sent(s, ok ? (ssize_t)n : -1, n); }

/* Everything the fast path does not take goes to JS: onPacket(buffer, address, port). */
static void to_js(ksock *s, const uint8_t *b, size_t n, const struct sockaddr_storage *from) {
  napi_env env = s->env;
  napi_handle_scope scope;
  if (napi_open_handle_scope(env, &scope) != napi_ok) return;
  char addr[INET6_ADDRSTRLEN];
  int port = 0;
  address_string(from, addr, sizeof addr, &port);
  napi_value argv[3], fn, recv, result;
  void *data;
  napi_create_buffer_copy(env, n, b, &data, &argv[0]);
  napi_create_string_latin1(env, addr, NAPI_AUTO_LENGTH, &argv[1]);
  napi_create_int32(env, port, &argv[2]);
  napi_get_reference_value(env, s->on_packet, &fn);
  napi_get_global(env, &recv);
  if (napi_make_callback(env, media_context, recv, fn, 3, argv, &result) == napi_pending_exception) {
    napi_value err;
    napi_get_and_clear_last_exception(env, &err);
    napi_fatal_exception(env, err);
  }
  napi_close_handle_scope(env, scope);
}

/* Reads one ready socket; returns how many datagrams it took. */
static int read_socket(ksock *s) {
  int total = 0;
  if (s->closing) return 0;
  for (int round = 0; round < MAX_ROUNDS; round++) {
    for (int i = 0; i < BATCH; i++) {
      iovs[i].iov_base = bufs[i];
      iovs[i].iov_len = MAX_DATAGRAM;
      memset(&msgs[i].msg_hdr, 0, sizeof msgs[i].msg_hdr);
      msgs[i].msg_hdr.msg_iov = &iovs[i];
      msgs[i].msg_hdr.msg_iovlen = 1;
      msgs[i].msg_hdr.msg_name = &froms[i];
      msgs[i].msg_hdr.msg_namelen = sizeof froms[i];
    }
    int got = recvmmsg(s->fd, msgs, BATCH, MSG_DONTWAIT, NULL);
    if (got <= 0) return total;
    total += got;
    double now = now_ms();
    for (int i = 0; i < got; i++) {
      size_t n = msgs[i].msg_len;
      int truncated = (msgs[i].msg_hdr.msg_flags & MSG_TRUNC) != 0;
      s->packets_in++;
      s->bytes_in += (double)n;
      int cls = 0;
      if (s->has_latched && !truncated && same_source(&s->latched, &froms[i])) cls = media_class(bufs[i], n);
      if (cls) {
        accept_packet(s, bufs[i], n, cls, now, 1, -1);
      } else {
        flush_out();
        to_js(s, bufs[i], n, &froms[i]);
        if (s->closing) return total; /* JS closed this socket from its handler */
      }
    }
    flush_out(); /* before bufs are reused */
    if (got < BATCH) return total;
  }
  return total;
}

/*
 * ---- io_uring: receives and sends without a syscall per socket ----
 *
 * Why: at 1,000 calls (2,000 sockets at 50 pps each) a drain finds about one datagram per
 * ready socket, so the epoll path pays one recvmmsg per packet plus one sendto per forward:
 * two to three syscalls per packet, which alone cost more than the 0.6x-rtpengine target
 * (bench/floor-relay.c, no checks at all, measured 0.72x). Here every socket has one
 * multishot recvmsg in the kernel that fills buffers from one shared provided-buffer ring;
 * a drain runs the kernel's pending work and submits the queued sends in one io_uring_enter,
 * and reads every socket's datagrams from the completion queue. Accepted packets leave as
 * send SQEs straight from the receive buffer (no copy), all of them in the next enter.
 *
 * The ring uses DEFER_TASKRUN: the kernel does not interrupt this thread per packet; it
 * queues the work and signals the ring's eventfd once, which libuv watches beside the epoll
 * set (watch_set), so the poll interval's pacing holds as it does for epoll.
 *
 * Buffers belong to the ring, not to sockets: closing a socket cancels its multishot (the
 * kernel then drops its file, so the port is free at once) and leaves every buffer where it is;
 * completions still queued for it are recognised by (id, gen) and only give their buffer back.
 * A multishot that ends (no buffer was free: -ENOBUFS, or an error) is armed again at the end
 * of the pass, when the pass has given its buffers back; its datagrams wait in the socket
 * meanwhile. When the ring cannot be had (not built with liburing, ENOSYS, a seccomp policy's
 * EPERM, an older kernel's EINVAL) sockets go to the epoll set as before (media.io).
 */
static int io_pref = 0; /* setIoMode: 0 auto, 1 uring, 2 epoll */
static int ep_count, uring_count;
static double io_rearms, io_no_buffers, io_ring_errors, uring_opened, epoll_opened, fixed_opened;
static int fixed_count; /* open sockets holding a slot of the ring's file table */

#ifdef KEYLATCH_IO_URING
#define RX_BUFS 2048 /* receive buffers shared by every socket (a power of two) */
#define RX_NAME ((unsigned)sizeof(struct sockaddr_in6))
#define RX_BUF_SIZE ((sizeof(struct io_uring_recvmsg_out) + RX_NAME + MAX_DATAGRAM + 63) & ~(size_t)63)
#define RX_BGID 1
#define RX_SQ 2048
/* Room for every completion that can be outstanding at once (a receive per held buffer, a send
   per held buffer, an end per socket), so that the CQ never overflows: a completion the kernel
   cannot post or keep would leave its socket's multishot ended with nobody to re-arm it. */
#define RX_CQ 65536
#define RX_BATCH 256 /* completions copied out per pass */
/* Passes per drain, so that the loop's other work is not starved; generous, because a drain
   capped low falls behind under load and its backlog turns into latency. */
#define RX_ROUNDS 64
#define ARM_ERRORS_MAX 3

enum { UD_RECV = 1, UD_SEND = 2, UD_CANCEL = 3 };
#define UD(tag, v) (((uint64_t)(tag) << 56) | (uint64_t)(v))
#define UD_TAG(u) ((int)((u) >> 56))

static struct io_uring rx;
static int rx_state = 0; /* 0 untried, 1 ready, -1 unavailable */
static int rx_evfd = -1;
static uv_poll_t rx_poll;
static struct io_uring_buf_ring *rx_br;
static uint8_t *rx_mem;
static int rx_returned; /* buffers given back since the last advance */
static struct msghdr rx_msg; /* the layout every multishot receive writes: name, no control */
static uint32_t next_gen = 1;
static int send_plain; /* this kernel's io_uring cannot send to an address: sendto instead */
static uint64_t rx_pending; /* SQEs queued since the last submit */
/* The ring has a sparse file table, and each socket it serves holds a slot of it: receives and
   sends name the slot (IOSQE_FIXED_FILE), so the kernel finds the socket in the ring's own table
   instead of taking and dropping a reference on the file in the process's fd table for every
   receive and every send. The table has as many slots as the process may have fds (the kernel
   allows no more), handed out from a stack; a socket that finds none left is named by its fd. */
static int *slot_free;
static int slot_free_len;

/* The fd an SQE for s names, and flags it with IOSQE_FIXED_FILE when that is s's slot. */
static int ring_fd(ksock *s, struct io_uring_sqe *sqe) {
  if (!s->fixed) return s->fd;
  sqe->flags |= IOSQE_FIXED_FILE;
  return s->slot;
}

/* s takes its slot in the file table (fd) or gives it back (-1); sets s->fixed. */
static void ring_slot(ksock *s, int fd) {
  if (fd >= 0 ? s->fixed || !slot_free_len : !s->fixed) return;
  int slot = fd >= 0 ? slot_free[slot_free_len - 1] : s->slot;
  int ok = io_uring_register_files_update(&rx, (unsigned)slot, &fd, 1) == 1;
  if (fd < 0) {
    s->fixed = 0;
    fixed_count--;
    if (ok) slot_free[slot_free_len++] = slot; /* a slot that could not be emptied is not used again */
  } else if (ok) {
    slot_free_len--;
    s->slot = slot;
    s->fixed = 1;
    fixed_count++;
    fixed_opened++;
  }
}

/* What a send holding receive buffer bid needs when it completes. */
typedef struct {
  int out_id;
  uint32_t out_gen;
  uint32_t len;
  const uint8_t *b;
  struct sockaddr_in6 dest; /* a copy: JS may re-point the socket before the send is issued */
} tx_meta;
static tx_meta tx[RX_BUFS];

/* Sockets whose multishot ended in this drain. They are armed again when it ends, not at once:
   by then the drain has given every buffer back, whereas re-armed mid-drain while the ring is
   still empty, a socket with data waiting ends again at once (-ENOBUFS), and under load that
   churn (hundreds of thousands of re-arms a second, measured) eats the CPU the backlog needs. */
static int rearm_ids[MAX_SOCKETS];
static int rearm_len;

static uint8_t *rx_buf(int bid) { return rx_mem + (size_t)bid * RX_BUF_SIZE; }

static void rx_give_back(int bid) {
  io_uring_buf_ring_add(rx_br, rx_buf(bid), (unsigned)RX_BUF_SIZE, (unsigned short)bid, io_uring_buf_ring_mask(RX_BUFS), rx_returned);
  rx_returned++;
}

static void rx_publish(void) {
  if (!rx_returned) return;
  io_uring_buf_ring_advance(rx_br, rx_returned);
  rx_returned = 0;
}

static struct io_uring_sqe *rx_sqe(void) {
  struct io_uring_sqe *sqe = io_uring_get_sqe(&rx);
  if (!sqe) { /* full: issue what it holds (their completions are read in this drain or the next) */
    io_uring_submit(&rx);
    rx_pending = 0;
    sqe = io_uring_get_sqe(&rx);
  }
  if (sqe) rx_pending++;
  return sqe;
}

static void rx_submit(void) {
  if (!rx_pending) return;
  rx_pending = 0;
  io_uring_submit(&rx);
}

/* The ring, its buffers and its eventfd, made once (they need the env's loop). */
static int ring_ready(uv_loop_t *loop) {
  if (rx_state) return rx_state == 1;
  rx_state = -1;
  struct io_uring_params p;
  memset(&p, 0, sizeof p);
  p.flags = IORING_SETUP_CQSIZE | IORING_SETUP_SINGLE_ISSUER | IORING_SETUP_DEFER_TASKRUN;
  p.cq_entries = RX_CQ;
  if (io_uring_queue_init_params(RX_SQ, &rx, &p) < 0) {
    /* before 6.1 there is no DEFER_TASKRUN: the kernel then runs the work itself and posts
       completions, which signal the eventfd as well */
    memset(&p, 0, sizeof p);
    p.flags = IORING_SETUP_CQSIZE;
    p.cq_entries = RX_CQ;
    if (io_uring_queue_init_params(RX_SQ, &rx, &p) < 0) return 0;
  }
  size_t ring_bytes = RX_BUFS * sizeof(struct io_uring_buf);
  void *br = mmap(NULL, ring_bytes, PROT_READ | PROT_WRITE, MAP_ANONYMOUS | MAP_PRIVATE, -1, 0);
  /* In huge pages where the kernel gives them: the ring hands buffers out in turn, so every
     packet lands in another of ~2,000 4 KiB pages, a TLB miss each on 4 KiB pages. */
  size_t mem_bytes = (RX_BUFS * RX_BUF_SIZE + (2u << 20) - 1) & ~(size_t)((2u << 20) - 1);
  void *mem = NULL;
  if (posix_memalign(&mem, 2u << 20, mem_bytes) == 0) madvise(mem, mem_bytes, MADV_HUGEPAGE);
  rx_mem = mem;
  rx_evfd = eventfd(0, EFD_NONBLOCK | EFD_CLOEXEC);
  struct io_uring_buf_reg reg;
  memset(&reg, 0, sizeof reg);
  reg.ring_addr = (unsigned long)br;
  reg.ring_entries = RX_BUFS;
  reg.bgid = RX_BGID;
  if (br == MAP_FAILED || !rx_mem || rx_evfd < 0 || io_uring_register_buf_ring(&rx, &reg, 0) != 0 || io_uring_register_eventfd(&rx, rx_evfd) != 0) {
    io_uring_queue_exit(&rx);
    if (br != MAP_FAILED) munmap(br, ring_bytes);
    free(rx_mem);
    rx_mem = NULL;
    if (rx_evfd >= 0) close(rx_evfd);
    rx_evfd = -1;
    return 0;
  }
  rx_br = br;
  struct rlimit nofile;
  int slots = getrlimit(RLIMIT_NOFILE, &nofile) == 0 && nofile.rlim_cur < MAX_SOCKETS ? (int)nofile.rlim_cur : MAX_SOCKETS;
  slot_free = malloc((size_t)slots * sizeof *slot_free);
  if (slot_free && io_uring_register_files_sparse(&rx, (unsigned)slots) == 0) { /* 5.19 and later */
    for (int i = 0; i < slots; i++) slot_free[i] = slots - 1 - i;
    slot_free_len = slots;
  }
  io_uring_buf_ring_init(rx_br);
  for (int i = 0; i < RX_BUFS; i++) rx_give_back(i);
  rx_publish();
  memset(&rx_msg, 0, sizeof rx_msg);
  rx_msg.msg_namelen = RX_NAME;
  uv_poll_init(loop, &rx_poll, rx_evfd);
  rx_state = 1;
  return 1;
}

/* Puts s's multishot receive in the kernel (submitted with the pass's other SQEs, or at once). */
static int ring_arm(ksock *s, int poll_first) {
  struct io_uring_sqe *sqe = rx_sqe();
  if (!sqe) return 0;
  io_uring_prep_recvmsg_multishot(sqe, 0, &rx_msg, 0);
  sqe->fd = ring_fd(s, sqe);
  sqe->flags |= IOSQE_BUFFER_SELECT;
  sqe->buf_group = RX_BGID;
  if (poll_first) sqe->ioprio |= IORING_RECVSEND_POLL_FIRST; /* a new socket is empty: wait for data */
  sqe->user_data = UD(UD_RECV, ((uint64_t)s->gen << 16) | (uint64_t)s->id);
  s->armed = 1;
  s->rearm = 0;
  return 1;
}

/* s leaves the ring for the epoll set (its multishot was refused, or keeps failing). */
static void ring_to_epoll(ksock *s) {
  struct epoll_event ev = { .events = EPOLLIN, .data.u32 = (uint32_t)s->id };
  if (epoll_ctl(ep_fd, EPOLL_CTL_ADD, s->fd, &ev) < 0) return;
  s->uring = 0;
  uring_count--;
  ep_count++;
}

/* Queues o's send of receive buffer bid's packet to o's destination; 1 when the send holds the buffer. */
static int ring_queue_send(ksock *o, const uint8_t *b, size_t n, int bid) {
  struct io_uring_sqe *sqe = send_plain ? NULL : rx_sqe();
  if (!sqe) {
    count_sent(o, sendto(o->fd, b, n, MSG_DONTWAIT, (struct sockaddr *)&o->dest, o->dest_len), n);
    return 0;
  }
  tx_meta *m = &tx[bid];
  m->out_id = o->id;
  m->out_gen = o->gen;
  m->len = (uint32_t)n;
  m->b = b;
  memcpy(&m->dest, &o->dest, o->dest_len);
  io_uring_prep_send(sqe, 0, b, n, MSG_DONTWAIT);
  sqe->fd = ring_fd(o, sqe);
  io_uring_prep_send_set_addr(sqe, (const struct sockaddr *)&m->dest, (uint16_t)o->dest_len);
  sqe->user_data = UD(UD_SEND, bid);
  return 1;
}

static void ring_send_done(int bid, int res) {
  tx_meta *m = &tx[bid];
  ksock *o = lookup(m->out_id);
  if (o && o->gen == m->out_gen && !o->closing) {
    if (res == -EINVAL || res == -EOPNOTSUPP) {
      /* a kernel whose io_uring cannot send to an address (before 6.0): plain sends from now on, this one included */
      send_plain = 1;
      count_sent(o, sendto(o->fd, m->b, m->len, MSG_DONTWAIT, (struct sockaddr *)&m->dest, o->dest_len), m->len);
    } else {
      count_sent(o, res, m->len);
    }
  }
  rx_give_back(bid);
}

/* One receive completion: a datagram for s (or the end of its multishot). Returns 1 for a datagram. */
static int ring_recv_done(uint64_t ud, int res, unsigned flags, double now) {
  int id = (int)(ud & 0xffff);
  uint32_t gen = (uint32_t)((ud >> 16) & 0xffffffffu);
  int has_buf = (flags & IORING_CQE_F_BUFFER) != 0;
  int bid = has_buf ? (int)(flags >> IORING_CQE_BUFFER_SHIFT) : -1;
  ksock *s = lookup(id);
  if (!s || s->gen != gen || s->closing || !s->uring) { /* closed, or its id reused since */
    if (has_buf) rx_give_back(bid);
    return 0;
  }
  if (!(flags & IORING_CQE_F_MORE)) {
    s->armed = 0;
    if (!s->rearm && rearm_len < MAX_SOCKETS) rearm_ids[rearm_len++] = s->id;
    s->rearm = 1;
  }
  if (res < 0) {
    if (res == -ENOBUFS) {
      io_no_buffers++;
    } else {
      io_ring_errors++;
      /* -EINVAL: this kernel has no multishot recvmsg; anything else that repeats: give up the ring for s */
      if (res == -EINVAL || ++s->arm_errors >= ARM_ERRORS_MAX) {
        s->rearm = 0; /* its entry in rearm_ids is then skipped */
        if (!s->armed) ring_to_epoll(s);
        if (res == -EINVAL) rx_state = -1;
      }
    }
    if (has_buf) rx_give_back(bid);
    return 0;
  }
  if (!has_buf) return 0;
  s->arm_errors = 0;
  uint8_t *base = rx_buf(bid);
  struct io_uring_recvmsg_out *o = io_uring_recvmsg_validate(base, res, &rx_msg);
  if (!o) {
    rx_give_back(bid);
    return 0;
  }
  struct sockaddr_storage from;
  memset(&from, 0, sizeof from);
  memcpy(&from, io_uring_recvmsg_name(o), o->namelen < RX_NAME ? o->namelen : RX_NAME);
  uint8_t *b = io_uring_recvmsg_payload(o, &rx_msg);
  size_t n = io_uring_recvmsg_payload_length(o, res, &rx_msg);
  int truncated = (o->flags & MSG_TRUNC) != 0;
  s->packets_in++;
  s->bytes_in += (double)n;
  int cls = 0;
  if (s->has_latched && !truncated && same_source(&s->latched, &from)) cls = media_class(b, n);
  if (cls) {
    if (!accept_packet(s, b, n, cls, now, 0, bid)) rx_give_back(bid);
  } else {
    rx_submit(); /* sends accepted before this packet leave before JS can re-wire anything */
    to_js(s, b, n, &from);
    rx_give_back(bid);
  }
  return 1;
}

typedef struct {
  uint64_t ud;
  int res;
  unsigned flags;
} cqe_copy;

/* Submits what is queued and runs the kernel's deferred receives. A plain enter runs up to 20
   of them (IO_LOCAL_TW_DEFAULT_MAX); under a backlog it asks for RX_BATCH completions with a
   zero timeout instead, which runs up to that many. Only under a backlog: whenever fewer
   completions than asked for are there, the kernel arms an already-expired hrtimer for the
   wait, and on a VM that timer interrupt costs more than the enters it saves when sockets hold
   a datagram or so each (1,000 calls: 5.9 us/packet timed on every busy pass, 4.9 plain). But a
   relay that has fallen behind needs the big enters: plain ones only, at 1,500 calls it never
   caught up again (99.8 % late at 92 % CPU). */
static void ring_enter(int backlog) {
  if (!backlog) {
    io_uring_submit_and_get_events(&rx);
    return;
  }
  struct __kernel_timespec zero = { 0, 0 };
  struct io_uring_cqe *cqe;
  io_uring_submit_and_wait_timeout(&rx, &cqe, RX_BATCH, &zero, NULL);
}

/* A pass that brought more datagrams than this ran receives that found several waiting each:
   the sockets hold a queue, and the next pass enters for a backlog. */
#define BACKLOG_DATAGRAMS 40

/* Everything the ring has for us; returns how many datagrams it brought. */
static int drain_ring(void) {
  static cqe_copy got[RX_BATCH];
  int total = 0;
  uint64_t ignored;
  if (read(rx_evfd, &ignored, sizeof ignored) < 0 && errno != EAGAIN) io_ring_errors++;
  int round, backlog = 0;
  for (round = 0; round < RX_ROUNDS; round++) {
    /* one enter: issues the queued sends and re-arms, and runs the receives the kernel deferred */
    rx_pending = 0;
    ring_enter(backlog);
    /* Copied out before anything runs: a handler (to_js) may close sockets, which enters the
       ring again and may post completions into the slots just read. */
    unsigned n = 0, head;
    struct io_uring_cqe *cqe;
    io_uring_for_each_cqe(&rx, head, cqe) {
      got[n].ud = cqe->user_data;
      got[n].res = cqe->res;
      got[n].flags = cqe->flags;
      if (++n == RX_BATCH) break;
    }
    io_uring_cq_advance(&rx, n);
    if (!n) break;
    double now = now_ms();
    int datagrams = 0;
    for (unsigned i = 0; i < n; i++) {
      int tag = UD_TAG(got[i].ud);
      if (tag == UD_RECV) datagrams += ring_recv_done(got[i].ud, got[i].res, got[i].flags, now);
      else if (tag == UD_SEND) ring_send_done((int)(got[i].ud & 0xffff), got[i].res);
    }
    total += datagrams;
    backlog = datagrams > BACKLOG_DATAGRAMS;
    rx_publish();
  }
  for (int i = 0; i < rearm_len; i++) {
    ksock *s = lookup(rearm_ids[i]);
    if (!s || !s->rearm) continue;
    s->rearm = 0;
    if (s->uring && !s->armed && !s->closing && ring_arm(s, 0)) io_rearms++;
  }
  rearm_len = 0;
  rx_submit();
  /* Stopped by RX_ROUNDS with work left: it raises no new signal, so raise one. */
  if (round == RX_ROUNDS || io_uring_cq_ready(&rx)) {
    uint64_t one = 1;
    if (write(rx_evfd, &one, sizeof one) < 0) io_ring_errors++;
  }
  return total;
}

/* s is closing: its multishot must leave the kernel now, which then drops its file (and port). */
static void ring_forget(ksock *s) {
  struct io_uring_sqe *sqe = rx_sqe();
  if (sqe) {
    io_uring_prep_cancel_fd(sqe, s->fixed ? s->slot : s->fd, IORING_ASYNC_CANCEL_ALL | (s->fixed ? IORING_ASYNC_CANCEL_FD_FIXED : 0));
    sqe->user_data = UD(UD_CANCEL, 0);
  }
  rx_pending = 0;
  io_uring_submit_and_get_events(&rx); /* runs the cancellation; its completions wait for the next drain */
}
#else
static int ring_queue_send(ksock *o, const uint8_t *b, size_t n, int bid) {
  (void)bid;
  count_sent(o, sendto(o->fd, b, n, MSG_DONTWAIT, (struct sockaddr *)&o->dest, o->dest_len), n);
  return 0;
}
#endif

#define EP_EVENTS 1024
#define EP_ROUNDS 4 /* epoll_wait rounds per drain, so that the loop's other work is not starved */

/* Every socket that is ready now; returns how many datagrams were read. */
static int drain(void) {
  static struct epoll_event evs[EP_EVENTS];
  int total = 0;
  draining = 1;
#ifdef KEYLATCH_IO_URING
  if (rx_br && (uring_count || rx_pending || io_uring_cq_ready(&rx))) total += drain_ring();
#endif
  /* only when some socket is there: in io_uring mode the set is empty, and this would be one syscall per drain for nothing */
  for (int round = 0; round < EP_ROUNDS && ep_count; round++) {
    int got = epoll_wait(ep_fd, evs, EP_EVENTS, 0);
    /* An id, not a pointer: a socket closed earlier in this drain is then simply not found
       (or, reused meanwhile, read once for nothing). */
    for (int i = 0; i < got; i++) {
      ksock *s = lookup((int)evs[i].data.u32);
      if (s) total += read_socket(s);
    }
    if (got < EP_EVENTS) break;
  }
  draining = 0;
  for (int i = 0; i < graveyard_len; i++) free(graveyard[i]);
  graveyard_len = 0;
  return total;
}

static void on_ep_ready(uv_poll_t *h, int status, int events);

static void watch_set(int on) {
  if (on == ep_watching) return;
  ep_watching = on;
  if (on) uv_poll_start(&ep_poll, UV_READABLE, on_ep_ready);
  else uv_poll_stop(&ep_poll);
#ifdef KEYLATCH_IO_URING
  if (rx_state == 1) { /* the ring's eventfd beside the set: one wakeup drains both */
    if (on) uv_poll_start(&rx_poll, UV_READABLE, on_ep_ready);
    else uv_poll_stop(&rx_poll);
  }
#endif
}

static void arm_timer_us(long us) {
  struct itimerspec its = { .it_value = { us / 1000000, (us % 1000000) * 1000 } };
  timerfd_settime(timer_fd, 0, &its, NULL);
  timer_armed = 1;
}

static void arm_timer(void) { arm_timer_us(poll_interval_us); }

/* While sockets receive through the ring, a drain at least this often even when nothing woke the
   loop: the ring signals its eventfd only when its queue of deferred work turns non-empty, so
   work it ever held back unsignalled would otherwise wait for the next wakeup that comes, and a
   sweep 20 times a second costs nothing measurable. */
#define SWEEP_US 50000

static void sweep_later(void) {
  if (uring_count > 0 && !timer_armed) arm_timer_us(SWEEP_US);
}

static void on_ep_ready(uv_poll_t *h, int status, int events) {
  (void)h;
  (void)events;
  if (status < 0) return;
  drain();
  if (poll_interval_us > 0 && open_count > 0) {
    watch_set(0);
    arm_timer();
  } else {
    sweep_later();
  }
}

static void on_timer_ready(uv_poll_t *h, int status, int events) {
  (void)h;
  (void)events;
  uint64_t expirations;
  if (status < 0 || read(timer_fd, &expirations, sizeof expirations) < 0) return;
  timer_armed = 0;
  if (open_count == 0) return;
  if (drain() > 0 && poll_interval_us > 0) { /* media keeps coming: keep the pace */
    watch_set(0); /* (a sweep may have fired while watching) */
    arm_timer();
  } else { /* quiet: back to waking on arrival */
    watch_set(1);
    sweep_later();
  }
}

/* The set and the timer, made on the first socket (they need the env's loop). 0 on failure. */
static int ensure_poller(napi_env env) {
  if (ep_fd >= 0) return 1;
  uv_loop_t *loop;
  if (napi_get_uv_event_loop(env, &loop) != napi_ok) return 0;
  ep_fd = epoll_create1(EPOLL_CLOEXEC);
  timer_fd = timerfd_create(CLOCK_MONOTONIC, TFD_NONBLOCK | TFD_CLOEXEC);
  if (ep_fd < 0 || timer_fd < 0) return 0;
  uv_poll_init(loop, &ep_poll, ep_fd);
  uv_poll_init(loop, &timer_poll, timer_fd);
  uv_poll_start(&timer_poll, UV_READABLE, on_timer_ready);
  uv_unref((uv_handle_t *)&timer_poll); /* count_open refs it while sockets are open */
  return 1;
}

/* The loop stays alive while sockets are open, as it did with one libuv handle per socket. */
static void count_open(int delta) {
  open_count += delta;
  if (open_count == 1 && delta > 0) {
    uv_ref((uv_handle_t *)&timer_poll);
    watch_set(1);
  } else if (open_count == 0) {
    watch_set(0);
    if (timer_armed) {
      struct itimerspec off = { { 0, 0 }, { 0, 0 } };
      timerfd_settime(timer_fd, 0, &off, NULL);
      timer_armed = 0;
    }
    uv_unref((uv_handle_t *)&timer_poll);
  }
}

/* Whether new sockets receive through the ring (media.io, setIoMode); makes the ring on first use. */
static int use_ring(napi_env env) {
#ifdef KEYLATCH_IO_URING
  if (io_pref == 2) return 0;
  uv_loop_t *loop;
  if (rx_state == 0 && napi_get_uv_event_loop(env, &loop) == napi_ok) ring_ready(loop);
  if (rx_state == 1 && ep_watching && !uv_is_active((uv_handle_t *)&rx_poll)) uv_poll_start(&rx_poll, UV_READABLE, on_ep_ready);
  return rx_state == 1;
#else
  (void)env;
  return 0;
#endif
}

/* Puts a new socket on the ring or in the epoll set. 0 (errno set) on failure. */
static int watch_socket(napi_env env, ksock *s) {
#ifdef KEYLATCH_IO_URING
  s->gen = next_gen++;
  if (!next_gen) next_gen = 1;
  if (use_ring(env)) {
    s->uring = 1;
    ring_slot(s, s->fd);
    if (ring_arm(s, 1)) {
      uring_count++;
      uring_opened++;
      rx_submit();
      return 1;
    }
    s->uring = 0;
  }
#else
  (void)env;
#endif
  struct epoll_event ev = { .events = EPOLLIN, .data.u32 = (uint32_t)s->id };
  if (epoll_ctl(ep_fd, EPOLL_CTL_ADD, s->fd, &ev) < 0) {
#ifdef KEYLATCH_IO_URING
    int err = errno;
    ring_slot(s, -1); /* the caller closes the fd: the table must not hold it */
    errno = err;
#endif
    return 0;
  }
  ep_count++;
  epoll_opened++;
  return 1;
}

/* ---- N-API surface ---- */

#define CHECK(call)                                                  \
  do {                                                               \
    if ((call) != napi_ok) {                                         \
      napi_throw_error(env, NULL, "keylatch fastpath: " #call);      \
      return NULL;                                                   \
    }                                                                \
  } while (0)

static napi_value throw_errno(napi_env env, const char *what, int err) {
  char msg[128];
  snprintf(msg, sizeof msg, "%s: %s", what, strerror(err));
  napi_value code, message, error;
  const char *name = err == EADDRINUSE ? "EADDRINUSE" : err == EADDRNOTAVAIL ? "EADDRNOTAVAIL" : err == EACCES ? "EACCES" : "EIO";
  napi_create_string_utf8(env, name, NAPI_AUTO_LENGTH, &code);
  napi_create_string_utf8(env, msg, NAPI_AUTO_LENGTH, &message);
  napi_create_error(env, code, message, &error);
  napi_throw(env, error);
  return NULL;
}

static int get_int(napi_env env, napi_value v, int *out) { return napi_get_value_int32(env, v, out) == napi_ok; }

/* Parses (address, port) into a sockaddr of the socket's family. 0 on failure. */
static int parse_endpoint(napi_env env, napi_value addr, napi_value port, int family, struct sockaddr_storage *out, socklen_t *len) {
  char text[INET6_ADDRSTRLEN + 1];
  size_t got;
  int p;
  if (napi_get_value_string_latin1(env, addr, text, sizeof text, &got) != napi_ok || !get_int(env, port, &p) || p < 0 || p > 65535) return 0;
  memset(out, 0, sizeof *out);
  if (family == AF_INET) {
    struct sockaddr_in *v4 = (void *)out;
    v4->sin_family = AF_INET;
    v4->sin_port = htons((uint16_t)p);
    if (inet_pton(AF_INET, text, &v4->sin_addr) != 1) return 0;
    *len = sizeof *v4;
  } else {
    struct sockaddr_in6 *v6 = (void *)out;
    v6->sin6_family = AF_INET6;
    v6->sin6_port = htons((uint16_t)p);
    if (inet_pton(AF_INET6, text, &v6->sin6_addr) != 1) return 0;
    *len = sizeof *v6;
  }
  return 1;
}

static ksock *socket_arg(napi_env env, napi_value v) {
  int id;
  ksock *s = get_int(env, v, &id) ? lookup(id) : NULL;
  if (!s) napi_throw_error(env, NULL, "keylatch fastpath: no such socket");
  return s;
}

/* The prologue every per-socket call shares: exactly n arguments, the first a live socket id. */
static ksock *socket_call(napi_env env, napi_callback_info info, size_t n, napi_value *argv) {
  size_t argc = n;
  if (napi_get_cb_info(env, info, &argc, argv, NULL, NULL) != napi_ok || argc != n) {
    napi_throw_type_error(env, NULL, "keylatch fastpath: wrong number of arguments");
    return NULL;
  }
  return socket_arg(env, argv[0]);
}

/* open(family 4|6, address, port, isRtcp, onPacket) -> id */
static napi_value js_open(napi_env env, napi_callback_info info) {
  size_t argc = 5;
  napi_value argv[5];
  CHECK(napi_get_cb_info(env, info, &argc, argv, NULL, NULL));
  int fam, is_rtcp;
  if (argc < 5 || !get_int(env, argv[0], &fam) || !get_int(env, argv[3], &is_rtcp)) {
    napi_throw_type_error(env, NULL, "open(family, address, port, isRtcp, onPacket)");
    return NULL;
  }
  int family = fam == 6 ? AF_INET6 : AF_INET;
  struct sockaddr_storage local;
  socklen_t local_len;
  if (!parse_endpoint(env, argv[1], argv[2], family, &local, &local_len)) {
    napi_throw_type_error(env, NULL, "bad local address");
    return NULL;
  }
  int id = 0;
  for (int tries = 0; tries < MAX_SOCKETS && !id; tries++) {
    int candidate = next_id;
    next_id = next_id + 1 >= MAX_SOCKETS ? 1 : next_id + 1;
    if (!table[candidate]) id = candidate;
  }
  if (!id) return throw_errno(env, "socket table full", EMFILE);
  if (!ensure_poller(env)) return throw_errno(env, "epoll", errno);
  int fd = socket(family, SOCK_DGRAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
  if (fd < 0) return throw_errno(env, "socket", errno);
  if (bind(fd, (struct sockaddr *)&local, local_len) < 0) {
    int err = errno;
    close(fd);
    return throw_errno(env, "bind", err);
  }
  ksock *s = calloc(1, sizeof *s);
  s->id = id;
  s->fd = fd;
  s->family = family;
  s->is_rtcp = is_rtcp;
  s->env = env;
  s->out_rtp = s->out_rtcp = -1;
  s->rtp.clock_rate = 8000;
  s->last_seen = now_ms();
  if (napi_create_reference(env, argv[4], 1, &s->on_packet) != napi_ok) {
    close(fd);
    free(s);
    napi_throw_error(env, NULL, "keylatch fastpath: napi_create_reference");
    return NULL;
  }
  table[id] = s;
  if (!watch_socket(env, s)) {
    int err = errno;
    table[id] = NULL;
    napi_delete_reference(env, s->on_packet);
    close(fd);
    free(s);
    return throw_errno(env, "epoll_ctl", err);
  }
  count_open(1);
  napi_value out;
  CHECK(napi_create_int32(env, id, &out));
  return out;
}

static napi_value js_close(napi_env env, napi_callback_info info) {
  size_t argc = 1;
  napi_value argv[1];
  CHECK(napi_get_cb_info(env, info, &argc, argv, NULL, NULL));
  int id;
  ksock *s = argc == 1 && get_int(env, argv[0], &id) ? lookup(id) : NULL;
  if (!s) return NULL; /* closing twice is harmless */
  table[id] = NULL;
  s->closing = 1;
  if (s->on_close) s->on_close(s->hook_ctx);
  s->hook = NULL;
  napi_delete_reference(env, s->on_packet);
  /* Out of the set explicitly: close() alone would leave it there while a forked child that
     has not exec'd yet still holds the fd, and its readiness would make drains spin. */
#ifdef KEYLATCH_IO_URING
  if (rx_br) {
    if (s->uring) {
      ring_forget(s); /* also issues queued sends, some perhaps from this fd */
      uring_count--;
    } else {
      rx_submit(); /* queued sends from this fd go while it is still this socket's */
    }
    /* Out of the table too, or the table's reference would keep the port bound after close(). */
    ring_slot(s, -1);
  }
#endif
  if (!s->uring) {
    epoll_ctl(ep_fd, EPOLL_CTL_DEL, s->fd, NULL);
    ep_count--;
  }
  /* At once: a freed port must be bindable again (the pool reuses it). */
  close(s->fd);
  count_open(-1);
  if (!draining) {
    free(s);
    return NULL;
  }
  if (graveyard_len == graveyard_cap) {
    int cap = graveyard_cap ? graveyard_cap * 2 : 64;
    ksock **grown = realloc(graveyard, (size_t)cap * sizeof *grown);
    if (!grown) return NULL; /* leak one socket's memory rather than free it under the drain */
    graveyard = grown;
    graveyard_cap = cap;
  }
  graveyard[graveyard_len++] = s;
  return NULL;
}

/* send(id, buffer, address, port) -> bool: a protocol message from this socket. */
static napi_value js_send(napi_env env, napi_callback_info info) {
  napi_value argv[4];
  ksock *s = socket_call(env, info, 4, argv);
  if (!s) return NULL;
  void *data;
  size_t len;
  struct sockaddr_storage to;
  socklen_t to_len;
  if (napi_get_buffer_info(env, argv[1], &data, &len) != napi_ok || !parse_endpoint(env, argv[2], argv[3], s->family, &to, &to_len)) {
    napi_throw_type_error(env, NULL, "send(id, buffer, address, port)");
    return NULL;
  }
  napi_value ok;
  CHECK(napi_get_boolean(env, sendto(s->fd, data, len, MSG_DONTWAIT, (struct sockaddr *)&to, to_len) == (ssize_t)len, &ok));
  return ok;
}

/* setEndpoint(id, which 0=latched 1=destination, address|null, port) */
static napi_value js_set_endpoint(napi_env env, napi_callback_info info) {
  napi_value argv[4];
  ksock *s = socket_call(env, info, 4, argv);
  int which;
  if (!s || !get_int(env, argv[1], &which)) return NULL;
  napi_valuetype t;
  CHECK(napi_typeof(env, argv[2], &t));
  int *has = which == 0 ? &s->has_latched : &s->has_dest;
  struct sockaddr_storage *ep = which == 0 ? &s->latched : &s->dest;
  socklen_t len = 0;
  if (t == napi_null || t == napi_undefined) {
    *has = 0;
    return NULL;
  }
  if (!parse_endpoint(env, argv[2], argv[3], s->family, ep, &len)) {
    *has = 0;
    napi_throw_type_error(env, NULL, "bad endpoint");
    return NULL;
  }
  if (which == 1) s->dest_len = len;
  *has = 1;
  return NULL;
}

/* setOutputs(id, rtpOutId, rtcpOutId): the partner sockets accepted RTP and RTCP leave through. */
static napi_value js_set_outputs(napi_env env, napi_callback_info info) {
  napi_value argv[3];
  ksock *s = socket_call(env, info, 3, argv);
  if (!s) return NULL;
  if (!get_int(env, argv[1], &s->out_rtp)) s->out_rtp = -1;
  if (!get_int(env, argv[2], &s->out_rtcp)) s->out_rtcp = -1;
  return NULL;
}

/* forward(id, buffer): JS accepted this packet (it just latched its source); treat it as the fast path would. */
static napi_value js_forward(napi_env env, napi_callback_info info) {
  napi_value argv[2];
  ksock *s = socket_call(env, info, 2, argv);
  void *data;
  size_t len;
  if (!s || napi_get_buffer_info(env, argv[1], &data, &len) != napi_ok) return NULL;
  int cls = media_class(data, len);
  if (cls) accept_packet(s, data, len, cls, now_ms(), 0, -1);
  return NULL;
}

static napi_value js_set_clock_rate(napi_env env, napi_callback_info info) {
  napi_value argv[2];
  ksock *s = socket_call(env, info, 2, argv);
  int rate;
  if (s && get_int(env, argv[1], &rate) && rate > 0) s->rtp.clock_rate = (uint32_t)rate;
  return NULL;
}

/* lastSeen(id): the one figure the relay's housekeeping reads for every port every second. */
static napi_value js_last_seen(napi_env env, napi_callback_info info) {
  napi_value argv[1], out;
  ksock *s = socket_call(env, info, 1, argv);
  if (!s) return NULL;
  CHECK(napi_create_double(env, s->last_seen, &out));
  return out;
}

/* ssrc(id) -> the SSRC the latched source last sent, or -1: the key latch's SSRC gate reads it
   for every foreign packet on a latched leg, where building the whole stats() object would cost
   more than the check itself. */
static napi_value js_ssrc(napi_env env, napi_callback_info info) {
  napi_value argv[1], out;
  ksock *s = socket_call(env, info, 1, argv);
  if (!s) return NULL;
  CHECK(napi_create_double(env, s->have_ssrc ? (double)s->ssrc : -1, &out));
  return out;
}

/* The one int argument of a process-wide setter, when it lies in [min, max]; 0 otherwise. */
static int setting_arg(napi_env env, napi_callback_info info, int min, int max, int *out) {
  size_t argc = 1;
  napi_value argv[1];
  int v;
  if (napi_get_cb_info(env, info, &argc, argv, NULL, NULL) != napi_ok) {
    napi_throw_error(env, NULL, "keylatch fastpath: napi_get_cb_info"); /* as CHECK does */
    return 0;
  }
  if (argc != 1 || !get_int(env, argv[0], &v) || v < min || v > max) return 0;
  *out = v;
  return 1;
}

/* setPollInterval(us): 0 wakes on every arrival; else drains at most this often while media
   keeps coming (see "Readiness" above). Process-wide, like the socket table. */
static napi_value js_set_poll_interval(napi_env env, napi_callback_info info) {
  int us;
  if (setting_arg(env, info, 0, 100000, &us)) poll_interval_us = us;
  return NULL;
}

/* setSendBatching(0 off | 1 sendmmsg | 2 gso): process-wide, like the socket table. */
static napi_value js_set_send_batching(napi_env env, napi_callback_info info) {
  int mode;
  if (setting_arg(env, info, 0, 2, &mode)) send_mode = mode;
  return NULL;
}

/* setIoMode(0 auto | 1 uring | 2 epoll) -> whether sockets opened from now on receive through
   io_uring. Sockets already open keep their path. Process-wide, like the socket table. */
static napi_value js_set_io_mode(napi_env env, napi_callback_info info) {
  int mode;
  if (setting_arg(env, info, 0, 2, &mode)) io_pref = mode;
  if (!ensure_poller(env)) return throw_errno(env, "epoll", errno);
  napi_value out;
  CHECK(napi_get_boolean(env, use_ring(env), &out));
  return out;
}

static napi_value js_io_stats(napi_env env, napi_callback_info info) {
  napi_value o;
  CHECK(napi_create_object(env, &o));
  ks_set_num(env, o, "uringSockets", uring_count);
  ks_set_num(env, o, "epollSockets", ep_count);
  ks_set_num(env, o, "uringOpened", uring_opened);
  ks_set_num(env, o, "epollOpened", epoll_opened);
  ks_set_num(env, o, "rearms", io_rearms);
  ks_set_num(env, o, "noBuffers", io_no_buffers);
  ks_set_num(env, o, "ringErrors", io_ring_errors);
  ks_set_num(env, o, "fixedSockets", fixed_count);
  ks_set_num(env, o, "fixedOpened", fixed_opened);
#ifdef KEYLATCH_IO_URING
  ks_set_num(env, o, "cqOverflow", rx_br ? (double)IO_URING_READ_ONCE(*rx.cq.koverflow) : 0);
#endif
  return o;
}

void ks_set_num(napi_env env, napi_value obj, const char *key, double v) {
  napi_value n;
  napi_create_double(env, v, &n);
  napi_set_named_property(env, obj, key, n);
}

/* stats(id) -> counters and RTP statistics of this socket. */
static napi_value js_stats(napi_env env, napi_callback_info info) {
  napi_value argv[1];
  ksock *s = socket_call(env, info, 1, argv);
  if (!s) return NULL;
  napi_value o;
  CHECK(napi_create_object(env, &o));
  double expected = s->rtp.received > 0 ? (double)s->rtp.cycles + s->rtp.max_seq - s->rtp.base_seq + 1 : 0;
  ks_set_num(env, o, "packetsIn", s->packets_in);
  ks_set_num(env, o, "bytesIn", s->bytes_in);
  ks_set_num(env, o, "packetsOut", s->packets_out);
  ks_set_num(env, o, "bytesOut", s->bytes_out);
  ks_set_num(env, o, "noDestination", s->no_destination);
  ks_set_num(env, o, "sendErrors", s->send_errors);
  ks_set_num(env, o, "lastSeen", s->last_seen);
  ks_set_num(env, o, "ssrc", s->have_ssrc ? (double)s->ssrc : -1);
  ks_set_num(env, o, "rtpExpected", expected);
  ks_set_num(env, o, "rtpLost", expected > s->rtp.received ? expected - s->rtp.received : 0);
  ks_set_num(env, o, "jitterMs", s->rtp.jitter * 1000.0 / s->rtp.clock_rate);
  ks_set_num(env, o, "lastSeq", s->rtp.max_seq);
  return o;
}

static napi_value init(napi_env env, napi_value exports) {
  napi_property_descriptor props[] = {
      {"open", NULL, js_open, NULL, NULL, NULL, napi_default, NULL},
      {"close", NULL, js_close, NULL, NULL, NULL, napi_default, NULL},
      {"send", NULL, js_send, NULL, NULL, NULL, napi_default, NULL},
      {"setEndpoint", NULL, js_set_endpoint, NULL, NULL, NULL, napi_default, NULL},
      {"setOutputs", NULL, js_set_outputs, NULL, NULL, NULL, napi_default, NULL},
      {"forward", NULL, js_forward, NULL, NULL, NULL, napi_default, NULL},
      {"setClockRate", NULL, js_set_clock_rate, NULL, NULL, NULL, napi_default, NULL},
      {"stats", NULL, js_stats, NULL, NULL, NULL, napi_default, NULL},
      {"lastSeen", NULL, js_last_seen, NULL, NULL, NULL, napi_default, NULL},
      {"ssrc", NULL, js_ssrc, NULL, NULL, NULL, napi_default, NULL},
      {"setSendBatching", NULL, js_set_send_batching, NULL, NULL, NULL, napi_default, NULL},
      {"setPollInterval", NULL, js_set_poll_interval, NULL, NULL, NULL, napi_default, NULL},
      {"setIoMode", NULL, js_set_io_mode, NULL, NULL, NULL, napi_default, NULL},
      {"ioStats", NULL, js_io_stats, NULL, NULL, NULL, napi_default, NULL},
  };
  napi_value name, resource;
  napi_create_string_utf8(env, "keylatch.media", NAPI_AUTO_LENGTH, &name);
  napi_create_object(env, &resource);
  napi_async_init(env, resource, name, &media_context);
  napi_define_properties(env, exports, sizeof props / sizeof props[0], props);
  return mixer_init(env, exports);
}

NAPI_MODULE(NODE_GYP_MODULE_NAME, init)
