/*
 * keylatch room mixer: the media side of group calls (src/rooms).
 *
 * A room participant's relay socket (native/fastpath.c) hands its *accepted* media, i.e. only
 * what its latch let through, to this module instead of forwarding it. Here it goes into a
 * small adaptive jitter buffer per participant (G.711 decoded to 16-bit linear), and a 20 ms
 * tick driven by a libuv timer on Node's own loop sends each participant the sum of everyone
 * else it may hear (its own voice left out), limited rather than wrapped, in its own codec.
 * No JavaScript runs per packet or per tick: JS only adds and removes participants, and polls
 * events (talking, DTMF) and counters a few times a second.
 *
 * Besides the mix a participant can take:
 *  - FORWARD: every other speaker's RTP unchanged (each with its own SSRC), for clients that
 *    mix themselves; costs no decoding.
 *  - RELAY: one speaker at a time, re-sequenced and re-timestamped under the listener's own
 *    SSRC, so a listener on a plain phone hears one continuous stream when the speaker changes
 *    (broadcast rooms); G.711 law converted bytewise where the listener's codec differs.
 *
 * DTMF (RFC 4733 telephone-event) is reported, never mixed or forwarded.
 */

#define _GNU_SOURCE
#include <errno.h>
#include <math.h>
#include <node_api.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <time.h>
#include <uv.h>
#ifdef KEYLATCH_IO_URING
#include <liburing.h>
#endif

#include "fastpath.h"

#define RATE 8000
#define FRAME 160 /* samples per 20 ms tick */
#define TICK_NS 20000000ull
#define RING 4096 /* 512 ms of buffered samples per participant */
#define RING_MASK (RING - 1)
#define MIN_TARGET 240  /* 30 ms: the least delay the jitter buffer aims for */
#define INIT_TARGET 320 /* 40 ms */
#define MAX_TARGET 1600 /* 200 ms */
#define IDLE_MS 1000.0  /* an input silent this long starts afresh when it comes back */
#define MAX_CATCHUP 5   /* ticks run at once after a stall; beyond that the clock skips */
#define MAX_ROOMS 4096
#define MAX_PARTS 65536
#define MAX_EVENTS 256
#define ACTIVE_ENERGY (40.0 * 40.0 * FRAME) /* below this a frame is silence and costs no mixing */
#define TALK_RMS 300.0                       /* about -40 dBov */
#define TALK_ON_FRAMES 3
#define TALK_OFF_FRAMES 25

enum { MODE_MIX = 0, MODE_FORWARD = 1, MODE_RELAY = 2 };
enum { EV_TALKING = 1, EV_QUIET = 2, EV_DTMF = 3 };

typedef struct kroom kroom;

typedef struct kpart {
  int id;
  kroom *room;
  struct kpart *next;
  ksock *sock; /* NULL once the socket closed */
  int law;     /* RTP payload type this participant was given: 0 PCMU or 8 PCMA */
  int dtmf_pt; /* -1 when none was negotiated */
  int mode, speaker, muted;
  int fixed_fd, fixed_at; /* the fd registered with io_uring, and where, or -1 */
  /* jitter buffer (its samples at the end of the struct) */
  int started;
  uint32_t src_ssrc, play_ts, high_ts;
  int target, calm_ticks;
  double last_arrival, transit, jitter;
  int have_transit;
  int active, contributes;
  /* what we send it */
  uint32_t out_ssrc, out_ts;
  uint16_t out_seq;
  int out_started;
  float gain; /* limiter: below 1 while the mix would clip */
  /* RELAY rewriting */
  uint32_t rl_src, rl_ts_off, rl_last_ts;
  uint16_t rl_seq_off, rl_last_seq;
  int rl_have;
  /* level and talking */
  double level;
  int talking, loud_run, quiet_run;
  uint32_t dtmf_ts;
  int dtmf_have;
  /* counters */
  double packets_in, late, resyncs, concealed, trimmed, clipped, sent, forwarded, dtmf_events, ignored;
  /* Last, so that a tick or a fan-out over many listeners (who have no audio in these) reads a
     few cache lines of each, not 8 KB apart. */
  int16_t frame[FRAME]; /* this tick's frame */
  int16_t ring[RING];
} kpart;

typedef struct {
  int type, pid, value;
} kevent;

struct kroom {
  int id;
  kpart *parts;
  kpart *relay_source; /* the speaker RELAY listeners hear now */
  kevent events[MAX_EVENTS];
  int ev_head, ev_count;
  double events_dropped;
};

static kroom *rooms[MAX_ROOMS];
static kpart *parts[MAX_PARTS];
static int next_room = 1, next_part = 1, room_count = 0, part_count = 0;
static uv_timer_t timer;
static int timer_ready = 0, timer_running = 0;
static uint64_t next_tick;
#define PHASES 10
static int phase = 0;
static double ticks = 0, tick_ns = 0, clock_skips = 0;

static int16_t ulaw_dec[256], alaw_dec[256];
static uint8_t ulaw_enc[65536], alaw_enc[65536];
static uint8_t ulaw_to_alaw[256], alaw_to_ulaw[256];

/* ---- G.711, the same arithmetic as src/codec/g711.ts, as tables ---- */

static uint8_t linear_to_ulaw(int s) {
  int sign = s < 0 ? 0x80 : 0;
  if (s < 0) s = -s;
  if (s > 32635) s = 32635;
  s += 0x84;
  int exponent = 7;
  for (int mask = 0x4000; (s & mask) == 0 && exponent > 0; mask >>= 1) exponent--;
  int mantissa = (s >> (exponent + 3)) & 0x0f;
  return (uint8_t)(~(sign | (exponent << 4) | mantissa) & 0xff);
}

static int16_t ulaw_to_linear(uint8_t byte) {
  int u = ~byte & 0xff;
  int t = (((u & 0x0f) << 3) + 0x84) << ((u & 0x70) >> 4);
  return (int16_t)(u & 0x80 ? 0x84 - t : t - 0x84);
}

static uint8_t linear_to_alaw(int s) {
  int sign = s >= 0 ? 0x80 : 0;
  if (s < 0) s = -s - 1;
  s >>= 3;
  int exponent = 0;
  while (s > 0x1f && exponent < 7) {
    s >>= 1;
    exponent++;
  }
  int mantissa = exponent == 0 ? s >> 1 : s & 0x0f;
  return (uint8_t)((sign | (exponent << 4) | (mantissa & 0x0f)) ^ 0x55);
}

static int16_t alaw_to_linear(uint8_t byte) {
  int a = byte ^ 0x55;
  int exponent = (a & 0x70) >> 4;
  int t = ((a & 0x0f) << 4) + 8;
  if (exponent > 0) t = (t + 0x100) << (exponent - 1);
  return (int16_t)(a & 0x80 ? t : -t);
}

static void build_tables(void) {
  for (int i = 0; i < 256; i++) {
    ulaw_dec[i] = ulaw_to_linear((uint8_t)i);
    alaw_dec[i] = alaw_to_linear((uint8_t)i);
  }
  for (int i = 0; i < 65536; i++) {
    ulaw_enc[i] = linear_to_ulaw(i - 32768);
    alaw_enc[i] = linear_to_alaw(i - 32768);
  }
  for (int i = 0; i < 256; i++) {
    ulaw_to_alaw[i] = alaw_enc[ulaw_dec[i] + 32768];
    alaw_to_ulaw[i] = ulaw_enc[alaw_dec[i] + 32768];
  }
}

/* ---- small helpers ---- */

static uint16_t rd16(const uint8_t *p) { return (uint16_t)((p[0] << 8) | p[1]); }
static uint32_t rd32(const uint8_t *p) { return ((uint32_t)p[0] << 24) | ((uint32_t)p[1] << 16) | ((uint32_t)p[2] << 8) | p[3]; }
static void wr16(uint8_t *p, uint16_t v) {
  p[0] = (uint8_t)(v >> 8);
  p[1] = (uint8_t)v;
}
static void wr32(uint8_t *p, uint32_t v) {
  p[0] = (uint8_t)(v >> 24);
  p[1] = (uint8_t)(v >> 16);
  p[2] = (uint8_t)(v >> 8);
  p[3] = (uint8_t)v;
}

static uint64_t mono_ns(void) {
  struct timespec ts;
  clock_gettime(CLOCK_MONOTONIC, &ts);
  return (uint64_t)ts.tv_sec * 1000000000ull + (uint64_t)ts.tv_nsec;
}

static uint32_t random32(void) {
  static uint64_t x = 0;
  if (!x) x = mono_ns() | 1;
  x ^= x << 13;
  x ^= x >> 7;
  x ^= x << 17;
  return (uint32_t)x;
}

static void push_event(kroom *r, int type, int pid, int value) {
  if (r->ev_count == MAX_EVENTS) {
    r->events_dropped++;
    return;
  }
  r->events[(r->ev_head + r->ev_count) % MAX_EVENTS] = (kevent){type, pid, value};
  r->ev_count++;
}

/* The RTP payload of a packet fastpath.c already checked: offset and length, padding excluded. */
static int payload_of(const uint8_t *b, size_t n, size_t *off, size_t *len) {
  size_t h = 12 + (size_t)(b[0] & 0x0f) * 4;
  if (b[0] & 0x10) h += 4 + (size_t)rd16(b + h + 2) * 4;
  size_t pad = (b[0] & 0x20) && n > h ? b[n - 1] : 0;
  if (h + pad > n) return 0;
  *off = h;
  *len = n - h - pad;
  return 1;
}

/* ---- output: many sockets' sends in one syscall ----
 *
 * A speaker's packet in a broadcast room becomes one send per listener, each from the
 * listener's own socket (its NAT was opened toward that port), and a tick one send per mixed
 * participant. One sendto each made the syscall itself a good part of the cost; with io_uring
 * they are queued here and go to the kernel together, in up to BATCH_MAX at a time. UDP sends on
 * these non-blocking sockets complete inline during the submit, so their results are read back
 * at once; a send the kernel still holds keeps its slot until it completes (and is counted then
 * if its participant still exists). Without io_uring (not built in, or the kernel or a seccomp
 * policy refuses it) every send is a plain ks_send_out, as before.
 */
#define SLOTS 1024
#define SLOT_BYTES (12 + 1024) /* the largest packet relay_to builds; bigger ones go straight out */
#define BATCH_MAX 256

typedef struct {
  kpart *part; /* whose counter a completed send bumps */
  int busy, forwarded;
  ksock *sock;
  size_t len;
  struct sockaddr_storage dest;
  uint8_t data[SLOT_BYTES];
} out_slot;

static int batching_wanted = 1; /* setBatching(0) turns it off (the bench compares both) */
#ifdef KEYLATCH_IO_URING
static struct io_uring ring;
static int ring_state = 0; /* 0 untried, 1 ready, -1 unavailable */
static out_slot *slots;
static int free_slots[SLOTS], free_count, queued;
/* Each participant's socket registered with the ring, so a send skips the fd lookup (and its
   reference counting). Registered only while the socket is open: a registered file keeps the
   socket, and its port, alive. */
static unsigned files = 0;
static int *free_files, free_files_count;
#endif

static int batching(void) {
#ifdef KEYLATCH_IO_URING
  if (ring_state == 0) {
    slots = calloc(SLOTS, sizeof *slots);
    ring_state = slots && io_uring_queue_init(SLOTS, &ring, 0) == 0 ? 1 : -1;
    if (ring_state == 1) {
      for (int i = 0; i < SLOTS; i++) free_slots[free_count++] = SLOTS - 1 - i;
      struct rlimit rl;
      unsigned want = getrlimit(RLIMIT_NOFILE, &rl) == 0 && rl.rlim_cur < MAX_PARTS ? (unsigned)rl.rlim_cur : MAX_PARTS;
      free_files = malloc(want * sizeof *free_files);
      if (free_files && io_uring_register_files_sparse(&ring, want) == 0) {
        files = want;
        for (unsigned i = 0; i < want; i++) free_files[free_files_count++] = (int)(want - 1 - i);
      }
    }
  }
  return batching_wanted && ring_state == 1;
#else
  return 0;
#endif
}

#ifdef KEYLATCH_IO_URING
static void reap(void) {
  struct io_uring_cqe *cqe;
  unsigned head, seen = 0;
  io_uring_for_each_cqe(&ring, head, cqe) {
    seen++;
    out_slot *o = &slots[cqe->user_data];
    int ok = cqe->res == (int)o->len;
    if (cqe->res == -EINVAL || cqe->res == -EOPNOTSUPP) {
      /* A kernel whose io_uring cannot send to an address (before 6.0): plain sends from now on,
         this one included. */
      ring_state = -1;
      if (o->part && o->part->sock == o->sock && ks_send_out(o->sock, o->data, o->len)) {
        if (o->forwarded) o->part->forwarded++;
        else o->part->sent++;
      }
    } else if (o->part && o->part->sock == o->sock) {
      /* The participant (and its socket) may have gone while the kernel held the send. */
      ks_count_send(o->sock, o->len, ok);
      if (ok) {
        if (o->forwarded) o->part->forwarded++;
        else o->part->sent++;
      }
    }
    o->busy = 0;
    free_slots[free_count++] = (int)(o - slots);
  }
  io_uring_cq_advance(&ring, seen);
}
#endif

/* Registers fd as p's fixed file (once per socket); whether p's sends may use it. */
static int fixed_file(kpart *p, int fd) {
#ifdef KEYLATCH_IO_URING
  if (p->fixed_fd == fd) return 1;
  if (p->fixed_at < 0) {
    if (!free_files_count) return 0;
    p->fixed_at = free_files[--free_files_count];
  }
  if (io_uring_register_files_update(&ring, (unsigned)p->fixed_at, &fd, 1) != 1) return 0;
  p->fixed_fd = fd;
  return 1;
#else
  (void)p;
  (void)fd;
  return 0;
#endif
}

/* p's socket is closing or leaving the mixer: the ring must not keep it open. */
static void unfix_file(kpart *p) {
#ifdef KEYLATCH_IO_URING
  if (p->fixed_at < 0) return;
  int none = -1;
  io_uring_register_files_update(&ring, (unsigned)p->fixed_at, &none, 1);
  free_files[free_files_count++] = p->fixed_at;
  p->fixed_at = p->fixed_fd = -1;
#else
  (void)p;
#endif
}

/* Sends everything queued. Called before the packet buffers it points into are reused and before control returns to the loop. */
static void out_flush(void) {
#ifdef KEYLATCH_IO_URING
  if (!queued) return;
  queued = 0;
  io_uring_submit(&ring);
  reap();
#endif
}

/* A buffer for p's next packet (SLOT_BYTES), or NULL when it must go by out_direct. */
static out_slot *out_slot_for(kpart *p, size_t n) {
#ifdef KEYLATCH_IO_URING
  if (!batching() || n > SLOT_BYTES) return NULL;
  if (!free_count) reap();
  if (!free_count) return NULL;
  out_slot *o = &slots[free_slots[--free_count]];
  o->busy = 1;
  o->part = p;
  o->sock = p->sock;
  return o;
#else
  (void)p;
  (void)n;
  return NULL;
#endif
}

/* Queues the slot's n bytes from its participant's socket to that socket's destination. */
static void out_queue(out_slot *o, size_t n, int forwarded) {
#ifdef KEYLATCH_IO_URING
  int fd;
  const struct sockaddr_storage *dest;
  socklen_t dest_len;
  o->len = n;
  o->forwarded = forwarded;
  struct io_uring_sqe *sqe = NULL;
  if (ks_send_target(o->sock, &fd, &dest, &dest_len)) {
    sqe = io_uring_get_sqe(&ring);
    if (!sqe) { /* the submission queue is full: send what it holds, then this */
      out_flush();
      sqe = io_uring_get_sqe(&ring);
    }
  }
  if (!sqe) {
    o->busy = 0;
    free_slots[free_count++] = (int)(o - slots);
    return;
  }
  memcpy(&o->dest, dest, dest_len);
  if (fixed_file(o->part, fd)) {
    io_uring_prep_send(sqe, o->part->fixed_at, o->data, n, MSG_DONTWAIT);
    sqe->flags |= IOSQE_FIXED_FILE;
  } else {
    io_uring_prep_send(sqe, fd, o->data, n, MSG_DONTWAIT);
  }
  io_uring_prep_send_set_addr(sqe, (const struct sockaddr *)&o->dest, (uint16_t)dest_len);
  sqe->user_data = (uint64_t)(o - slots);
  if (++queued >= BATCH_MAX) out_flush();
#else
  (void)o;
  (void)n;
  (void)forwarded;
#endif
}

/* p's packet b, batched when possible, else at once. */
static void out_send(kpart *p, const uint8_t *b, size_t n, int forwarded) {
  out_slot *o = out_slot_for(p, n);
  if (o) {
    memcpy(o->data, b, n);
    out_queue(o, n, forwarded);
  } else if (ks_send_out(p->sock, b, n)) {
    if (forwarded) p->forwarded++;
    else p->sent++;
  }
}

/* ---- input: jitter buffer ---- */

static void resync(kpart *p, uint32_t ssrc, uint32_t ts) {
  if (p->started) p->resyncs++;
  memset(p->ring, 0, sizeof p->ring);
  p->started = 1;
  p->src_ssrc = ssrc;
  p->play_ts = ts - (uint32_t)p->target;
  p->high_ts = ts;
}

static void take_audio(kpart *p, const uint8_t *b, size_t off, size_t len, double now) {
  uint32_t ssrc = rd32(b + 8), ts = rd32(b + 4);
  if (len == 0 || len > RING / 2) return;
  if (!p->started || ssrc != p->src_ssrc) resync(p, ssrc, ts);
  int32_t ahead = (int32_t)(ts - p->play_ts);
  if (ahead < 0) {
    /* Too late to play: the buffer was too shallow for this path's jitter. */
    p->late++;
    p->calm_ticks = 0;
    if (p->target < MAX_TARGET) p->target += FRAME / 4;
    if (ahead < -RING) resync(p, ssrc, ts);
    else return;
    ahead = (int32_t)(ts - p->play_ts);
  }
  if (ahead + (int32_t)len > RING - FRAME) {
    /* A jump (a sender's clock, a talkspurt after a gap): start playing from here. */
    resync(p, ssrc, ts);
  } else if ((int32_t)(p->high_ts - p->play_ts) <= 0 && ahead > p->target) {
    /* The buffer ran dry and this comes after a gap: play it after the usual delay, not after
       the gap as well (every cell past play_ts is silence: nothing was written there). */
    p->play_ts = ts - (uint32_t)p->target;
  }
  const int16_t *dec = b[1] % 128 == 8 ? alaw_dec : ulaw_dec;
  const uint8_t *pl = b + off;
  for (size_t i = 0; i < len; i++) p->ring[(ts + i) & RING_MASK] = dec[pl[i]];
  if ((int32_t)(ts + (uint32_t)len - p->high_ts) > 0) p->high_ts = ts + (uint32_t)len;
  /* RFC 3550 interarrival jitter, in samples: how deep the buffer should be. */
  double transit = now * (RATE / 1000.0) - (double)ts;
  if (p->have_transit) p->jitter += (fabs(transit - p->transit) - p->jitter) / 16.0;
  p->transit = transit;
  p->have_transit = 1;
  p->last_arrival = now;
}

static void take_dtmf(kpart *p, const uint8_t *b, size_t off, size_t len) {
  if (len < 4) return;
  uint32_t ts = rd32(b + 4);
  int end = (b[off + 1] & 0x80) != 0;
  /* The end packet comes three times (RFC 4733 2.5.1.4); report each event once. */
  if (!end || (p->dtmf_have && p->dtmf_ts == ts)) return;
  p->dtmf_have = 1;
  p->dtmf_ts = ts;
  p->dtmf_events++;
  if (b[off] <= 16) push_event(p->room, EV_DTMF, p->id, b[off]);
}

/* RELAY: the current speaker's packet under the listener's SSRC, sequence and timeline. `pl` is
   the payload already in the listener's law (converted once per packet, not per listener). */
static void relay_to(kpart *q, kpart *from, const uint8_t *b, const uint8_t *pl, size_t len) {
  uint8_t local[12 + 1024];
  if (len > 1024 || !q->sock) return;
  out_slot *slot = out_slot_for(q, 12 + len);
  uint8_t *out = slot ? slot->data : local;
  uint32_t in_ts = rd32(b + 4);
  uint16_t in_seq = rd16(b + 2);
  if (!q->rl_have || q->rl_src != from->src_ssrc) {
    /* A new speaker continues the listener's stream where the last one left it. */
    uint16_t next_seq = q->rl_have ? (uint16_t)(q->rl_last_seq + 1) : (uint16_t)random32();
    uint32_t next_ts = q->rl_have ? q->rl_last_ts + FRAME : random32();
    q->rl_seq_off = (uint16_t)(next_seq - in_seq);
    q->rl_ts_off = next_ts - in_ts;
    q->rl_src = from->src_ssrc;
    q->rl_have = 1;
    out[1] = 0x80; /* marker: a new talkspurt */
  } else {
    out[1] = 0;
  }
  out[0] = 0x80;
  out[1] |= (uint8_t)q->law;
  q->rl_last_seq = (uint16_t)(in_seq + q->rl_seq_off);
  q->rl_last_ts = in_ts + q->rl_ts_off;
  wr16(out + 2, q->rl_last_seq);
  wr32(out + 4, q->rl_last_ts);
  wr32(out + 8, q->out_ssrc);
  memcpy(out + 12, pl, len);
  if (slot) out_queue(slot, 12 + len, 1);
  else if (ks_send_out(q->sock, out, 12 + len)) q->forwarded++;
}

/* fastpath.c's hook: one accepted packet from a participant's latched source. */
static void on_media(void *ctx, const uint8_t *b, size_t n, int cls, double now) {
  kpart *p = ctx;
  if (cls != 1) return; /* RTCP: the relay terminates it here */
  size_t off, len;
  if (!payload_of(b, n, &off, &len)) return;
  p->packets_in++;
  int pt = b[1] & 0x7f;
  if (pt == p->dtmf_pt) return take_dtmf(p, b, off, len);
  if (pt != 0 && pt != 8) {
    p->ignored++;
    return;
  }
  if (!p->speaker || p->muted) return;
  take_audio(p, b, off, len, now);
  kroom *r = p->room;
  if (!r->relay_source) r->relay_source = p;
  /* The payload in each law, made once for all listeners: as it came, and converted when a listener needs it. */
  int in_law = pt;
  const uint8_t *as_is = b + off, *converted = NULL;
  uint8_t conv_buf[1024];
  for (kpart *q = r->parts; q; q = q->next) {
    if (q == p || !q->sock) continue;
    if (q->mode == MODE_FORWARD) {
      out_send(q, b, n, 1);
    } else if (q->mode == MODE_RELAY && r->relay_source == p) {
      if (q->law != in_law && !converted && len <= sizeof conv_buf) {
        const uint8_t *conv = in_law == 0 ? ulaw_to_alaw : alaw_to_ulaw;
        for (size_t i = 0; i < len; i++) conv_buf[i] = conv[as_is[i]];
        converted = conv_buf;
      }
      relay_to(q, p, b, q->law == in_law ? as_is : converted, len);
    }
  }
  /* Before fastpath.c reuses the receive buffer b points into. */
  out_flush();
}

static void on_socket_closed(void *ctx) {
  kpart *p = ctx;
  out_flush();
  unfix_file(p);
  p->sock = NULL;
}

/* ---- the tick ---- */

/* The next 20 ms of a participant's input, or silence. */
static void pull(kpart *p, double now) {
  p->active = 0;
  if (!p->started) return;
  if (now - p->last_arrival > IDLE_MS) {
    p->started = 0;
    return;
  }
  int32_t depth = (int32_t)(p->high_ts - p->play_ts);
  if (depth > p->target + 2 * FRAME) {
    /* More buffered than the path needs: drop 5 ms to bring the delay back down. */
    for (int i = 0; i < FRAME / 4; i++) p->ring[(p->play_ts + (uint32_t)i) & RING_MASK] = 0;
    p->play_ts += FRAME / 4;
    p->trimmed++;
    depth -= FRAME / 4;
  }
  /* Play at most what has arrived: on an underrun the playout waits for the sender instead of
     running ahead of it (which would make its next packets late). This also absorbs a sender
     whose clock is slower than ours. */
  int avail = depth < 0 ? 0 : depth < FRAME ? depth : FRAME;
  if (avail < FRAME) p->concealed++;
  double energy = 0;
  for (int i = 0; i < avail; i++) {
    int16_t *slot = &p->ring[(p->play_ts + (uint32_t)i) & RING_MASK];
    p->frame[i] = *slot;
    *slot = 0;
    energy += (double)p->frame[i] * p->frame[i];
  }
  for (int i = avail; i < FRAME; i++) p->frame[i] = 0;
  p->play_ts += (uint32_t)avail;
  /* The path has been calm for 5 s: aim a little shallower (but never below the jitter seen). */
  if (++p->calm_ticks >= 250) {
    p->calm_ticks = 0;
    int floor_target = (int)(p->jitter * 3) + MIN_TARGET;
    if (p->target - FRAME / 8 >= floor_target && p->target - FRAME / 8 >= MIN_TARGET) p->target -= FRAME / 8;
  }
  p->active = energy > ACTIVE_ENERGY;
  double rms = sqrt(energy / FRAME);
  p->level += (rms - p->level) * 0.3;
}

static void talk_detect(kpart *p, int heard) {
  int loud = heard && p->active && p->level > TALK_RMS;
  if (loud) {
    p->quiet_run = 0;
    if (!p->talking && ++p->loud_run >= TALK_ON_FRAMES) {
      p->talking = 1;
      push_event(p->room, EV_TALKING, p->id, (int)p->level);
    }
  } else {
    p->loud_run = 0;
    if (p->talking && ++p->quiet_run >= TALK_OFF_FRAMES) {
      p->talking = 0;
      push_event(p->room, EV_QUIET, p->id, 0);
    }
  }
}

static void send_frame(kpart *p, const uint8_t *payload) {
  uint8_t local[12 + FRAME];
  out_slot *slot = out_slot_for(p, sizeof local);
  uint8_t *pkt = slot ? slot->data : local;
  pkt[0] = 0x80;
  pkt[1] = (uint8_t)(p->law | (p->out_started ? 0 : 0x80));
  p->out_started = 1;
  wr16(pkt + 2, p->out_seq++);
  wr32(pkt + 4, p->out_ts);
  wr32(pkt + 8, p->out_ssrc);
  memcpy(pkt + 12, payload, FRAME);
  if (slot) out_queue(slot, sizeof local, 0);
  else if (ks_send_out(p->sock, pkt, sizeof local)) p->sent++;
}

static void mix_room(kroom *r, double now) {
  static uint8_t silence_u[FRAME], silence_a[FRAME];
  if (!silence_u[0]) {
    memset(silence_u, 0xff, FRAME);
    memset(silence_a, 0xd5, FRAME);
  }
  int32_t sum[FRAME];
  int contributors = 0;
  for (kpart *p = r->parts; p; p = p->next) {
    pull(p, now);
    int heard = p->speaker && !p->muted;
    talk_detect(p, heard);
    p->contributes = heard && p->active;
    if (!p->contributes) continue;
    if (contributors++ == 0) for (int i = 0; i < FRAME; i++) sum[i] = p->frame[i];
    else for (int i = 0; i < FRAME; i++) sum[i] += p->frame[i];
  }
  /* RELAY listeners follow whoever talks; the current speaker keeps the floor while talking. */
  kpart *cur = r->relay_source;
  if (!cur || !cur->talking || cur->muted) {
    for (kpart *p = r->parts; p; p = p->next)
      if (p->talking && p->speaker && !p->muted && p != cur) {
        r->relay_source = p;
        break;
      }
  }
  for (kpart *p = r->parts; p; p = p->next) {
    if (!p->sock || p->mode != MODE_MIX) continue;
    const uint8_t *silence = p->law == 8 ? silence_a : silence_u;
    int others = contributors - (p->contributes ? 1 : 0);
    if (others == 0) {
      /* Nobody else speaks: a ready-made silent frame, no arithmetic. */
      send_frame(p, silence);
      p->out_ts += FRAME;
      continue;
    }
    int32_t peak = 0;
    int32_t out[FRAME];
    for (int i = 0; i < FRAME; i++) {
      out[i] = sum[i] - (p->contributes ? p->frame[i] : 0);
      int32_t a = out[i] < 0 ? -out[i] : out[i];
      if (a > peak) peak = a;
    }
    /* A limiter instead of wrap-around: the whole frame scaled down when the sum would clip,
       recovering slowly so loud talkers do not pump the others. */
    if (peak * p->gain > 32767.0f) {
      p->gain = 32767.0f / (float)peak;
      p->clipped++;
    } else if (p->gain < 1.0f) {
      p->gain += (1.0f - p->gain) * 0.05f;
      if (p->gain > 0.999f) p->gain = 1.0f;
    }
    const uint8_t *enc = p->law == 8 ? alaw_enc : ulaw_enc;
    uint8_t payload[FRAME];
    for (int i = 0; i < FRAME; i++) {
      int32_t s = p->gain < 1.0f ? (int32_t)(out[i] * p->gain) : out[i];
      if (s > 32767) s = 32767;
      if (s < -32768) s = -32768;
      payload[i] = enc[s + 32768];
    }
    send_frame(p, payload);
    p->out_ts += FRAME;
  }
  /* The room's outputs leave together, before the next room is mixed. */
  out_flush();
}

static double now_ms(void) {
  struct timespec ts;
  clock_gettime(CLOCK_REALTIME, &ts);
  return (double)ts.tv_sec * 1000.0 + (double)ts.tv_nsec / 1e6;
}

/* Every room ticks every 20 ms, but in one of ten 2 ms phases (by its id): a tenth of the
   work per wakeup, so one wakeup neither holds the loop (and the fast path's input) for long
   nor sends every participant's packet in a single burst (ten rooms of 50 are ten bursts of
   50, not two or three of 150). */
static void on_timer(uv_timer_t *t) {
  uint64_t now = mono_ns();
  int n = 0;
  while (now >= next_tick && n < MAX_CATCHUP * PHASES) {
    double wall = now_ms();
    uint64_t start = mono_ns();
    for (int i = 1; i < MAX_ROOMS; i++)
      if (rooms[i] && i % PHASES == phase) mix_room(rooms[i], wall);
    tick_ns += (double)(mono_ns() - start);
    if (phase == 0) ticks++;
    phase = (phase + 1) % PHASES;
    next_tick += TICK_NS / PHASES;
    n++;
  }
  if (now >= next_tick) {
    /* Stalled for more than MAX_CATCHUP ticks: skip ahead rather than burst. The time skipped
       is lost audio, so every output's timestamp moves on by it (receivers see a gap, not a
       stream that runs behind the clock). */
    uint64_t behind = now - next_tick;
    uint32_t samples = (uint32_t)(behind / (TICK_NS / FRAME));
    for (int i = 1; i < MAX_PARTS; i++)
      if (parts[i]) parts[i]->out_ts += samples;
    clock_skips++;
    next_tick = now + TICK_NS / PHASES;
  }
  uint64_t wait_ms = (next_tick - now + 999999ull) / 1000000ull;
  uv_timer_start(t, on_timer, wait_ms, 0);
}

static void start_timer(napi_env env) {
  if (!timer_ready) {
    uv_loop_t *loop;
    napi_get_uv_event_loop(env, &loop);
    uv_timer_init(loop, &timer);
    uv_unref((uv_handle_t *)&timer);
    timer_ready = 1;
  }
  if (timer_running) return;
  timer_running = 1;
  next_tick = mono_ns() + TICK_NS / PHASES;
  uv_timer_start(&timer, on_timer, TICK_NS / PHASES / 1000000ull, 0);
}

static void stop_timer_if_idle(void) {
  if (timer_running && room_count == 0) {
    uv_timer_stop(&timer);
    timer_running = 0;
  }
}

/* ---- N-API surface ---- */

static int arg_ints(napi_env env, napi_callback_info info, size_t n, int *out) {
  napi_value argv[8];
  size_t argc = 8;
  if (n > 8 || napi_get_cb_info(env, info, &argc, argv, NULL, NULL) != napi_ok || argc != n) goto bad;
  for (size_t i = 0; i < n; i++)
    if (napi_get_value_int32(env, argv[i], &out[i]) != napi_ok) goto bad;
  return 1;
bad:
  napi_throw_type_error(env, NULL, "keylatch mixer: bad arguments");
  return 0;
}

static napi_value int_value(napi_env env, int v) {
  napi_value out;
  napi_create_int32(env, v, &out);
  return out;
}

static kroom *room_of(int id) { return id > 0 && id < MAX_ROOMS ? rooms[id] : NULL; }
static kpart *part_of(int id) { return id > 0 && id < MAX_PARTS ? parts[id] : NULL; }

/* A free slot of a table (ids are 1..size-1, handed out round-robin so a stale id is rarely reused soon); 0 when full. */
static int free_slot(void **table, int size, int *next) {
  for (int tries = 1; tries < size; tries++) {
    int c = *next;
    *next = *next + 1 >= size ? 1 : *next + 1;
    if (!table[c]) return c;
  }
  return 0;
}

/* roomCreate() -> id */
static napi_value js_room_create(napi_env env, napi_callback_info info) {
  int id = free_slot((void **)rooms, MAX_ROOMS, &next_room);
  if (!id) {
    napi_throw_error(env, "EMFILE", "keylatch mixer: room table full");
    return NULL;
  }
  kroom *r = calloc(1, sizeof *r);
  r->id = id;
  rooms[id] = r;
  room_count++;
  start_timer(env);
  return int_value(env, id);
}

/* The kernel may still hold a send of p's (see out_slot): its result must not touch p. */
static void out_forget(kpart *p) {
#ifdef KEYLATCH_IO_URING
  if (slots)
    for (int i = 0; i < SLOTS; i++)
      if (slots[i].busy && slots[i].part == p) slots[i].part = NULL;
#else
  (void)p;
#endif
}

static void part_free(kpart *p) {
  out_flush();
  unfix_file(p);
  out_forget(p);
  if (p->sock) ks_set_hook(p->sock, NULL, NULL, NULL);
  kroom *r = p->room;
  for (kpart **at = &r->parts; *at; at = &(*at)->next)
    if (*at == p) {
      *at = p->next;
      break;
    }
  if (r->relay_source == p) r->relay_source = NULL;
  parts[p->id] = NULL;
  part_count--;
  free(p);
}

/* roomDestroy(id) */
static napi_value js_room_destroy(napi_env env, napi_callback_info info) {
  int a[1];
  if (!arg_ints(env, info, 1, a)) return NULL;
  kroom *r = room_of(a[0]);
  if (!r) return NULL;
  while (r->parts) part_free(r->parts);
  rooms[r->id] = NULL;
  room_count--;
  free(r);
  stop_timer_if_idle();
  return NULL;
}

/* partAdd(roomId, socketId, law 0|8, dtmfPt|-1, mode, speaker) -> id */
static napi_value js_part_add(napi_env env, napi_callback_info info) {
  int a[6];
  if (!arg_ints(env, info, 6, a)) return NULL;
  kroom *r = room_of(a[0]);
  ksock *s = ks_lookup(a[1]);
  if (!r || !s || (a[2] != 0 && a[2] != 8) || a[3] < -1 || a[3] > 127 || a[4] < MODE_MIX || a[4] > MODE_RELAY) {
    napi_throw_range_error(env, NULL, "keylatch mixer: no such room or socket, or a bad law/mode");
    return NULL;
  }
  int id = free_slot((void **)parts, MAX_PARTS, &next_part);
  if (!id) {
    napi_throw_error(env, "EMFILE", "keylatch mixer: participant table full");
    return NULL;
  }
  kpart *p = calloc(1, sizeof *p);
  p->id = id;
  p->room = r;
  p->sock = s;
  p->law = a[2];
  p->dtmf_pt = a[3];
  p->mode = a[4];
  p->speaker = a[5] != 0;
  p->target = INIT_TARGET;
  p->fixed_fd = p->fixed_at = -1;
  p->gain = 1.0f;
  p->out_ssrc = random32();
  p->out_seq = (uint16_t)random32();
  p->out_ts = random32();
  p->next = r->parts;
  r->parts = p;
  parts[id] = p;
  part_count++;
  ks_set_hook(s, on_media, on_socket_closed, p);
  return int_value(env, id);
}

/* partSet(id, muted, mode, speaker) */
static napi_value js_part_set(napi_env env, napi_callback_info info) {
  int a[4];
  if (!arg_ints(env, info, 4, a)) return NULL;
  kpart *p = part_of(a[0]);
  if (!p || a[2] < MODE_MIX || a[2] > MODE_RELAY) return NULL;
  p->muted = a[1] != 0;
  p->mode = a[2];
  p->speaker = a[3] != 0;
  if (p->muted || !p->speaker) {
    p->started = 0;
    if (p->room->relay_source == p) p->room->relay_source = NULL;
  }
  return NULL;
}

/* partRemove(id): its socket forwards nothing any more (it has no outputs). */
static napi_value js_part_remove(napi_env env, napi_callback_info info) {
  int a[1];
  if (!arg_ints(env, info, 1, a)) return NULL;
  kpart *p = part_of(a[0]);
  if (p) part_free(p);
  return NULL;
}

/* roomPoll(id, withCounters) -> { events: [[type, participant, value]...], participants: [...] }
   (participants empty unless asked for: events are polled often, counters seldom) */
static napi_value js_room_poll(napi_env env, napi_callback_info info) {
  int a[2];
  if (!arg_ints(env, info, 2, a)) return NULL;
  kroom *r = room_of(a[0]);
  if (!r) return NULL;
  napi_value out, events, list;
  napi_create_object(env, &out);
  napi_create_array_with_length(env, (size_t)r->ev_count, &events);
  for (int i = 0; i < r->ev_count; i++) {
    kevent *e = &r->events[(r->ev_head + i) % MAX_EVENTS];
    napi_value ev;
    napi_create_array_with_length(env, 3, &ev);
    napi_set_element(env, ev, 0, int_value(env, e->type));
    napi_set_element(env, ev, 1, int_value(env, e->pid));
    napi_set_element(env, ev, 2, int_value(env, e->value));
    napi_set_element(env, events, (uint32_t)i, ev);
  }
  r->ev_head = (r->ev_head + r->ev_count) % MAX_EVENTS;
  r->ev_count = 0;
  napi_set_named_property(env, out, "events", events);
  ks_set_num(env, out, "eventsDropped", r->events_dropped);
  napi_create_array(env, &list);
  uint32_t i = 0;
  for (kpart *p = a[1] ? r->parts : NULL; p; p = p->next) {
    napi_value o;
    napi_create_object(env, &o);
    ks_set_num(env, o, "id", p->id);
    ks_set_num(env, o, "level", p->level);
    ks_set_num(env, o, "talking", p->talking);
    ks_set_num(env, o, "packetsIn", p->packets_in);
    ks_set_num(env, o, "late", p->late);
    ks_set_num(env, o, "resyncs", p->resyncs);
    ks_set_num(env, o, "concealed", p->concealed);
    ks_set_num(env, o, "trimmed", p->trimmed);
    ks_set_num(env, o, "clipped", p->clipped);
    ks_set_num(env, o, "sent", p->sent);
    ks_set_num(env, o, "forwarded", p->forwarded);
    ks_set_num(env, o, "dtmf", p->dtmf_events);
    ks_set_num(env, o, "ignored", p->ignored);
    ks_set_num(env, o, "bufferMs", p->target * 1000.0 / RATE);
    ks_set_num(env, o, "jitterMs", p->jitter * 1000.0 / RATE);
    napi_set_element(env, list, i++, o);
  }
  napi_set_named_property(env, out, "participants", list);
  return out;
}

/* mixerStats() -> ticks run, their total time, clock skips, rooms and participants */
static napi_value js_mixer_stats(napi_env env, napi_callback_info info) {
  napi_value o;
  napi_create_object(env, &o);
  ks_set_num(env, o, "ticks", ticks);
  ks_set_num(env, o, "tickNs", tick_ns);
  ks_set_num(env, o, "clockSkips", clock_skips);
  ks_set_num(env, o, "rooms", room_count);
  ks_set_num(env, o, "participants", part_count);
  ks_set_num(env, o, "batched", batching());
#ifdef KEYLATCH_IO_URING
  ks_set_num(env, o, "fixedFiles", files - (unsigned)free_files_count);
#endif
  return o;
}

/* setBatching(on) -> whether sends now go through io_uring (false when it is not available) */
static napi_value js_set_batching(napi_env env, napi_callback_info info) {
  int a[1];
  if (!arg_ints(env, info, 1, a)) return NULL;
  out_flush();
  batching_wanted = a[0] != 0;
  napi_value out;
  napi_get_boolean(env, batching(), &out);
  return out;
}

napi_value mixer_init(napi_env env, napi_value exports) {
  build_tables();
  napi_property_descriptor props[] = {
      {"roomCreate", NULL, js_room_create, NULL, NULL, NULL, napi_default, NULL},
      {"roomDestroy", NULL, js_room_destroy, NULL, NULL, NULL, napi_default, NULL},
      {"partAdd", NULL, js_part_add, NULL, NULL, NULL, napi_default, NULL},
      {"partSet", NULL, js_part_set, NULL, NULL, NULL, napi_default, NULL},
      {"partRemove", NULL, js_part_remove, NULL, NULL, NULL, napi_default, NULL},
      {"roomPoll", NULL, js_room_poll, NULL, NULL, NULL, napi_default, NULL},
      {"mixerStats", NULL, js_mixer_stats, NULL, NULL, NULL, napi_default, NULL},
      {"setBatching", NULL, js_set_batching, NULL, NULL, NULL, napi_default, NULL},
  };
  napi_define_properties(env, exports, sizeof props / sizeof props[0], props);
  return exports;
}
