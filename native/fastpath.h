/*
 * What native/fastpath.c offers the other native modules of the addon (native/mixer.c): a
 * socket by id, a hook that takes a socket's accepted media instead of forwarding it, and a
 * send toward the socket's destination. Every decision about latching and destinations stays
 * with TypeScript, exactly as for forwarded media.
 */
#ifndef KEYLATCH_FASTPATH_H
#define KEYLATCH_FASTPATH_H

#include <node_api.h>
#include <stddef.h>
#include <stdint.h>
#include <sys/socket.h>

typedef struct ksock ksock;

/* Accepted media from the latched source (cls 1 = RTP, 2 = RTCP), instead of forwarding it. */
typedef void (*ks_media_hook)(void *ctx, const uint8_t *b, size_t n, int cls, double now_ms);
/* The socket is closing: the hook owner must forget it (ids are reused). */
typedef void (*ks_close_hook)(void *ctx);

ksock *ks_lookup(int id);
/* Installs (or with hook NULL removes) the socket's media hook. */
void ks_set_hook(ksock *s, ks_media_hook hook, ks_close_hook on_close, void *ctx);
/* Sends from this socket to its destination (the latched source, or what its latch allows); 0 when it has none. */
int ks_send_out(ksock *s, const uint8_t *b, size_t n);

/* Where ks_send_out would send, for a sender that batches (native/mixer.c's io_uring path): the
   socket's fd and destination; 0, counted as no destination, when it has none. */
int ks_send_target(ksock *s, int *fd, const struct sockaddr_storage **dest, socklen_t *dest_len);
/* Counts a send made that way as ks_send_out counts its own. */
void ks_count_send(ksock *s, size_t n, int ok);

/* obj[key] = v, for the stats objects both modules return. */
void ks_set_num(napi_env env, napi_value obj, const char *key, double v);

napi_value mixer_init(napi_env env, napi_value exports);

#endif
