/*
 * floor-relay: the least a userspace UDP relay can do per packet, as bench:relay's yardstick.
 *
 * Not a product and not a fair competitor: it checks nothing (no RTP validation, no latching
 * rules, no statistics, no control protocol). It exists to answer one question the benchmark
 * cannot answer otherwise: how much of a relay's CPU per packet is the kernel's socket path
 * (one receive and one send per packet, plus the loopback delivery charged to the sender),
 * which every relay built on sockets pays, keylatch and rtpengine's userspace mode alike.
 * If keylatch sits close to this floor, what is left to cut is in the kernel, not in keylatch.
 *
 * Ports base..base+2N-1 on --addr, paired (base+2c, base+2c+1) for call c. A datagram on one
 * port of a pair makes its sender that port's peer and goes out of the other port to that
 * port's peer (symmetric latching at its crudest), dropped while the other has none. One epoll
 * over all sockets, recvmmsg per ready socket, one sendto per packet: what keylatch's fast
 * path does below saturation. Prints "ready\n" once bound; runs until killed.
 *
 *   floor-relay --addr IP --base PORT --calls N
 */
#define _GNU_SOURCE
#include <arpa/inet.h>
#include <errno.h>
#include <netinet/in.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <unistd.h>

#define BATCH 32
#define EVENTS 1024
#define MAX_DATAGRAM 2048

typedef struct {
  int fd, has_peer;
  struct sockaddr_in peer;
} port;

int main(int argc, char **argv) {
  const char *addr = "127.0.0.1";
  int base = 0, calls = 0;
  for (int i = 1; i + 1 < argc; i += 2) {
    if (!strcmp(argv[i], "--addr")) addr = argv[i + 1];
    else if (!strcmp(argv[i], "--base")) base = atoi(argv[i + 1]);
    else if (!strcmp(argv[i], "--calls")) calls = atoi(argv[i + 1]);
  }
  int n = calls * 2;
  if (n <= 0 || base <= 0 || base + n > 65536) {
    fprintf(stderr, "usage: floor-relay --addr IP --base PORT --calls N\n");
    return 2;
  }
  struct rlimit rl;
  if (getrlimit(RLIMIT_NOFILE, &rl) == 0 && rl.rlim_cur < (rlim_t)n + 64) {
    rl.rlim_cur = rl.rlim_max;
    setrlimit(RLIMIT_NOFILE, &rl);
  }
  port *ports = calloc((size_t)n, sizeof *ports);
  int ep = epoll_create1(EPOLL_CLOEXEC);
  for (int i = 0; i < n; i++) {
    struct sockaddr_in sa = { .sin_family = AF_INET, .sin_port = htons((uint16_t)(base + i)) };
    if (inet_pton(AF_INET, addr, &sa.sin_addr) != 1) return 2;
    ports[i].fd = socket(AF_INET, SOCK_DGRAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
    if (ports[i].fd < 0 || bind(ports[i].fd, (struct sockaddr *)&sa, sizeof sa) < 0) {
      fprintf(stderr, "floor-relay: bind %d: %s\n", base + i, strerror(errno));
      return 1;
    }
    struct epoll_event ev = { .events = EPOLLIN, .data.u32 = (uint32_t)i };
    epoll_ctl(ep, EPOLL_CTL_ADD, ports[i].fd, &ev);
  }
  printf("ready\n");
  fflush(stdout);

  static uint8_t bufs[BATCH][MAX_DATAGRAM];
  struct mmsghdr msgs[BATCH];
  struct iovec iovs[BATCH];
  struct sockaddr_in froms[BATCH];
  struct epoll_event events[EVENTS];
  for (;;) {
    int got = epoll_wait(ep, events, EVENTS, -1);
    for (int k = 0; k < got; k++) {
      int i = (int)events[k].data.u32;
      port *in = &ports[i], *out = &ports[i ^ 1];
      for (int b = 0; b < BATCH; b++) {
        iovs[b] = (struct iovec){ bufs[b], MAX_DATAGRAM };
        memset(&msgs[b].msg_hdr, 0, sizeof msgs[b].msg_hdr);
        msgs[b].msg_hdr.msg_iov = &iovs[b];
        msgs[b].msg_hdr.msg_iovlen = 1;
        msgs[b].msg_hdr.msg_name = &froms[b];
        msgs[b].msg_hdr.msg_namelen = sizeof froms[b];
      }
      int r = recvmmsg(in->fd, msgs, BATCH, MSG_DONTWAIT, NULL);
      for (int b = 0; b < r; b++) {
        in->peer = froms[b];
        in->has_peer = 1;
        if (out->has_peer) sendto(out->fd, bufs[b], msgs[b].msg_len, MSG_DONTWAIT, (struct sockaddr *)&out->peer, sizeof out->peer);
      }
    }
  }
}
