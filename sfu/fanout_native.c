/* See fanout_native.h. Runs on the event loop's thread, one packet at a time. */

#define _POSIX_C_SOURCE 200809L  /* clock_gettime under -std=c11 */

#include <errno.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <time.h>

#include "fanout_native.h"

#define RTP_MAX 1500              /* what a subscriber is sent at most */
#define SRTP_TRAILER_MAX 148      /* libsrtp's room for tag and MKI */

typedef int (*protect_fn)(void *ctx, void *rtp, int *len);
static protect_fn srtp_protect_fn;
static protect_fn srtp_unprotect_fn;
static protect_fn srtp_unprotect_rtcp_fn;

void fan_init(uintptr_t srtp_protect, uintptr_t srtp_unprotect,
              uintptr_t srtp_unprotect_rtcp) {
    srtp_protect_fn = (protect_fn)srtp_protect;
    srtp_unprotect_fn = (protect_fn)srtp_unprotect;
    srtp_unprotect_rtcp_fn = (protect_fn)srtp_unprotect_rtcp;
}

static double clock_seconds(clockid_t clock) {
    struct timespec t;
    clock_gettime(clock, &t);
    return t.tv_sec + t.tv_nsec * 1e-9;
}

int fan_rewrite(struct fan_sub *sub, char *out, const char *payload, int size,
                int marker, uint16_t seq, uint32_t ts, int level) {
    const uint8_t *ext = sub->ext_plain;
    int ext_len = sub->plain_len;
    if (level >= 0 && sub->level_len) {
        ext = sub->ext_level;
        ext_len = sub->level_len;
    }
    int total = 12 + ext_len + size;
    if (total > RTP_MAX)
        return -1;
    uint16_t out_seq = (uint16_t)(seq + sub->seq_off);
    uint32_t out_ts = ts + sub->ts_off;
    uint8_t *p = (uint8_t *)out;
    p[0] = ext_len ? 0x90 : 0x80;
    p[1] = (uint8_t)((marker ? 0x80 : 0) | sub->pt);
    p[2] = out_seq >> 8;
    p[3] = out_seq & 0xFF;
    p[4] = out_ts >> 24;
    p[5] = (out_ts >> 16) & 0xFF;
    p[6] = (out_ts >> 8) & 0xFF;
    p[7] = out_ts & 0xFF;
    p[8] = sub->ssrc >> 24;
    p[9] = (sub->ssrc >> 16) & 0xFF;
    p[10] = (sub->ssrc >> 8) & 0xFF;
    p[11] = sub->ssrc & 0xFF;
    memcpy(p + 12, ext, ext_len);
    if (ext == sub->ext_level)
        p[12 + sub->level_at] = (uint8_t)level;
    memcpy(p + 12 + ext_len, payload, size);
    return total;
}

/* What the sequence number says about this packet: continuous, after a gap
 * (lost upstream, not by us), or late (the newest stays the reference). */
static void track(struct fan_sub *sub, uint16_t out_seq, uint32_t out_ts, double now,
                  int *flags) {
    if (!sub->has_last) {
        sub->has_last = 1;
        sub->first_seq = sub->ext_seq = out_seq;
    } else {
        uint16_t step = (uint16_t)(out_seq - sub->last_seq);
        if (step >= 0x8000)
            return;
        sub->ext_seq += step;
        if (step > 1) {
            sub->gaps += step - 1;
            sub->gap_pending = 1;
            *flags |= FAN_GAP;
        }
    }
    sub->last_seq = out_seq;
    sub->last_ts = out_ts;
    sub->last_at = now;
}

int fan_out(struct fan_sub **subs, int count, const char *payload, int size,
            int marker, uint16_t seq, uint32_t ts, uint32_t ssrc, int level,
            int epoch, double now) {
    _Alignas(8) char buf[RTP_MAX + SRTP_TRAILER_MAX];
    int flags = 0;
    for (int i = 0; i < count; i++) {
        struct fan_sub *sub = subs[i];
        sub->skipped = !sub->active || sub->epoch != epoch || sub->in_ssrc != ssrc
                       || !sub->srtp || sub->fd < 0;
        if (sub->skipped) {
            flags |= FAN_SKIPPED;
            continue;
        }
        sub->packets_sent++;
        sub->bytes_sent += size;
        int len = fan_rewrite(sub, buf, payload, size, marker, seq, ts, level);
        if (len < 0 || srtp_protect_fn(sub->srtp, buf, &len) != 0) {
            sub->dropped++;
        } else {
            ssize_t sent = send(sub->fd, buf, len, MSG_DONTWAIT);
            if (sent < 0)
                sub->dropped++;  /* UDP: a full buffer drops, it never blocks */
            else
                sub->wire_bytes += sent;
        }
        track(sub, (uint16_t)(seq + sub->seq_off), ts + sub->ts_off, now, &flags);
    }
    return flags;
}

/* --- receiving ---------------------------------------------------------------- */

struct fan_pub *fan_pub_new(void) {
    return calloc(1, sizeof(struct fan_pub));
}

void fan_pub_free(struct fan_pub *pub) {
    for (int i = 0; i < FAN_HISTORY; i++)
        free(pub->history[i].payload);
    free(pub);
}

static void keep(struct fan_pub *pub, const char *payload, int size, int marker,
                 uint16_t seq, uint32_t ts, uint32_t ssrc, int level) {
    struct fan_kept *k = &pub->history[seq & (FAN_HISTORY - 1)];
    k->size = 0;  /* unknown until the copy is made */
    if (size > k->cap) {
        char *grown = realloc(k->payload, size);
        if (!grown)
            return;
        k->payload = grown;
        k->cap = (uint16_t)size;
    }
    memcpy(k->payload, payload, size);
    k->ssrc = ssrc;
    k->ts = ts;
    k->seq = seq;
    k->size = (uint16_t)size;
    k->marker = (uint8_t)marker;
    k->level = (int16_t)level;
}

int fan_publish(struct fan_pub *pub, const char *payload, int size, int marker,
                uint16_t seq, uint32_t ts, uint32_t ssrc, int level) {
    double now = clock_seconds(CLOCK_MONOTONIC);
    int flags = 0;
    pub->packets++;
    pub->bytes += size;
    if (pub->first_at == 0) {
        pub->first_at = now;
        flags |= FAN_FIRST;
    }
    pub->last_at = now;
    if (pub->metered && level >= 0) {
        struct fan_levels *l = &pub->levels;
        int value = level & 0x7F;
        if (value < l->loudest)
            l->loudest = value;
        l->tick_packets++;
        l->sum += value;
        l->packets++;
        if (value <= pub->speaking_dbov)
            l->voice++;
    }
    if (pub->muted) {
        pub->dropped_muted++;
        return flags | FAN_MUTED;
    }
    if (pub->count) {  /* else no one to send to, and so no one to NACK it later */
        keep(pub, payload, size, marker, seq, ts, ssrc, level);
        flags |= fan_out(pub->subs, pub->count, payload, size, marker, seq, ts, ssrc,
                         level, pub->epoch, now);
        pub->forwarded += pub->count;
    }
    pub->times[pub->times_n++ % FAN_TIMES] = clock_seconds(CLOCK_MONOTONIC) - now;
    return flags;
}

void fan_add_time(struct fan_pub *pub, double seconds) {
    if (pub->times_n)
        pub->times[(pub->times_n - 1) % FAN_TIMES] += seconds;
}

int fan_recall(struct fan_pub *pub, struct fan_sub *sub, uint16_t seq, uint16_t anchor,
               char *out) {
    struct fan_kept *k = &pub->history[(uint16_t)(seq - sub->seq_off) & (FAN_HISTORY - 1)];
    if (!k->size || k->ssrc != sub->in_ssrc || (uint16_t)(k->seq + sub->seq_off) != seq
        || (uint16_t)(k->seq - anchor) >= 0x8000)
        return -1;
    return fan_rewrite(sub, out, k->payload, k->size, k->marker, k->seq, k->ts, k->level);
}

void fan_stream_add(struct fan_stream *s, uint16_t seq, uint32_t ts) {
    uint16_t step = (uint16_t)(seq - s->max_seq);
    int in_order = !s->has_max || (step && step < 0x8000);
    s->packets_received++;
    if (!s->has_base) {
        s->has_base = 1;
        s->base_seq = seq;
    }
    if (!in_order)
        return;
    int64_t arrival = (int64_t)(clock_seconds(CLOCK_REALTIME) * s->clockrate);
    if (s->has_max && seq < s->max_seq)
        s->cycles += 1 << 16;
    s->has_max = 1;
    s->max_seq = seq;
    if (s->has_last && ts != s->last_timestamp && s->packets_received > 1) {
        int64_t d = (arrival - s->last_arrival) - ((int64_t)ts - s->last_timestamp);
        if (d < 0)
            d = -d;
        s->jitter_q4 += d - ((s->jitter_q4 + 8) >> 4);
    }
    s->has_last = 1;
    s->last_arrival = arrival;
    s->last_timestamp = ts;
}

int fan_route(struct fan_rx *rx, uint32_t ssrc, int pt, struct fan_stream *stream,
              struct fan_pub *pub) {
    int i = 0;
    while (i < rx->count && rx->routes[i].pub != pub)
        i++;
    if (i == FAN_ROUTES)
        return -1;
    if (i == rx->count)
        rx->count++;
    rx->routes[i] = (struct fan_route){ssrc, pt, stream, pub};
    return 0;
}

void fan_unroute(struct fan_rx *rx, struct fan_pub *pub) {
    for (int i = 0; i < rx->count; i++)
        if (rx->routes[i].pub == pub)
            rx->routes[i--] = rx->routes[--rx->count];
}

/* The RFC 6464 level byte among RFC 8285 header extensions (the last one
 * with that id, as aiortc reads them): -1 if none, -2 if the block is
 * truncated (aiortc refuses the packet). */
static int find_level(const uint8_t *p, int len, int profile, int level_id) {
    int pos = 0, level = -1;
    if (profile != 0xBEDE && profile != 0x1000)
        return -1;
    while (pos < len) {
        if (!p[pos]) {
            pos++;
            continue;
        }
        int id, size;
        if (profile == 0xBEDE) {
            id = p[pos] >> 4;
            size = (p[pos] & 0x0F) + 1;
            pos += 1;
        } else {
            if (pos + 2 > len)
                return -2;
            id = p[pos];
            size = p[pos + 1];
            pos += 2;
        }
        if (pos + size > len)
            return -2;
        if (id == level_id && size)
            level = p[pos];
        pos += size;
    }
    return level;
}

static uint32_t be32(const uint8_t *p) {
    return (uint32_t)p[0] << 24 | (uint32_t)p[1] << 16 | (uint32_t)p[2] << 8 | p[3];
}

/* The route C takes this datagram by (routed RTP, not RTCP), or NULL. */
static struct fan_route *route_of(struct fan_rx *rx, const uint8_t *in, int len) {
    if (len < 12 || len > FAN_PLAIN_MAX || in[0] < 128 || in[0] > 191
        || (in[1] >= 192 && in[1] <= 223))
        return NULL;
    uint32_t ssrc = be32(in + 8);
    int pt = in[1] & 0x7F;
    for (int i = 0; i < rx->count; i++) {
        struct fan_route *route = &rx->routes[i];
        if (route->ssrc == ssrc && route->pt == pt)
            return route->pub->python ? NULL : route;
    }
    return NULL;
}

/* A datagram of ``route``'s SSRC: unprotected, parsed, counted and forwarded. */
static int ingest(struct fan_rx *rx, struct fan_route *route, void *srtp, const char *data,
                  int len, int level_id) {
    uint8_t *p = (uint8_t *)rx->plain;
    int size = len;
    memcpy(p, data, len);
    rx->plain_len = 0;
    if (srtp_unprotect_fn(srtp, p, &size) != 0 || p[0] >> 6 != 2)
        return FAN_DROP;
    int pos = 12 + 4 * (p[0] & 0x0F);
    int level = -1;
    if (size < pos)
        return FAN_DROP;
    if (p[0] & 0x10) {
        if (size < pos + 4)
            return FAN_DROP;
        int profile = p[pos] << 8 | p[pos + 1];
        int end = pos + 4 + 4 * (p[pos + 2] << 8 | p[pos + 3]);
        if (size < end)
            return FAN_DROP;
        level = find_level(p + pos + 4, end - pos - 4, profile, level_id);
        if (level == -2)
            return FAN_DROP;
        pos = end;
    }
    int stop = size;
    if (p[0] & 0x20) {
        int padding = p[size - 1];
        if (!padding || padding > size - pos)
            return FAN_DROP;
        stop -= padding;
    }
    rx->plain_len = size;
    uint16_t seq = (uint16_t)(p[2] << 8 | p[3]);
    uint32_t ts = be32(p + 4);
    fan_stream_add(route->stream, seq, ts);
    if (stop == pos)
        return 0;  /* padding only: no media */
    return fan_publish(route->pub, (const char *)p + pos, stop - pos, p[1] >> 7, seq, ts,
                       be32(p + 8), level);
}

int fan_ingest(struct fan_rx *rx, void *srtp, const char *data, int len, int level_id) {
    struct fan_route *route = route_of(rx, (const uint8_t *)data, len);
    return route ? ingest(rx, route, srtp, data, len, level_id) : FAN_PASS;
}

/* Read and forward the routed RTP waiting on ``fd``, until the socket is
 * empty (FAN_EMPTY), the next datagram is something else (FAN_PASS, left
 * unread for Python's reader: STUN, DTLS, RTCP, an SSRC not routed) or a
 * packet leaves work to Python (its flags, and it in ``plain``). */
int fan_drain(struct fan_rx *rx, int fd, void *srtp, int level_id) {
    for (;;) {
        uint8_t head[12];
        ssize_t n = recv(fd, head, sizeof head, MSG_PEEK | MSG_DONTWAIT | MSG_TRUNC);
        if (n < 0)
            return errno == EAGAIN || errno == EWOULDBLOCK ? FAN_EMPTY : FAN_PASS;
        struct fan_route *route =
            n > FAN_PLAIN_MAX ? NULL : route_of(rx, head, n < 12 ? (int)n : 12);
        if (!route)
            return FAN_PASS;
        n = recv(fd, rx->raw, FAN_PLAIN_MAX, MSG_DONTWAIT);
        if (n < 0)
            return FAN_PASS;  /* asyncio's reader reports the error */
        rx->last_at = clock_seconds(CLOCK_MONOTONIC);
        /* the datagram peeked at: its route holds */
        int flags = ingest(rx, route, srtp, rx->raw, (int)n, level_id);
        if (flags & FAN_DROP)
            continue;
        rx->drained++;  /* for the transport's counters: what was accepted */
        rx->drained_bytes += n;
        if (flags)
            return flags;
    }
}

/* --- receiver reports ------------------------------------------------------------ */

#define RTT_ALPHA 0.85            /* weight of the previous smoothed RTT */

void fan_sr_sent(struct fan_sub *sub, uint32_t ntp_middle, double wall) {
    sub->sr_ntp[sub->sr_next] = ntp_middle;
    sub->sr_wall[sub->sr_next] = wall;
    sub->sr_next = (sub->sr_next + 1) % FAN_SR_KEPT;
}

/* A report block about this stream, arrived at ``wall``: kept as the latest,
 * and an RTT from the SR it answers (RFC 3550 6.4.1: now - LSR - DLSR, with
 * our own send time for LSR). */
void fan_report(struct fan_sub *sub, const struct fan_block *block, double wall) {
    sub->reports++;
    sub->report = *block;
    sub->report_at = wall;
    if (!block->dlsr)
        return;
    for (int i = 0; i < FAN_SR_KEPT; i++) {
        if (sub->sr_wall[i] == 0 || sub->sr_ntp[i] != block->lsr)
            continue;
        double rtt = wall - sub->sr_wall[i] - block->dlsr / 65536.0;
        if (rtt < 0)
            rtt = 0;
        sub->rtt = sub->rtt_count ? RTT_ALPHA * sub->rtt + (1 - RTT_ALPHA) * rtt : rtt;
        sub->rtt_total += rtt;
        sub->rtt_count++;
        return;
    }
}

#define RTCP_SR 200
#define RTCP_RR 201
#define RTCP_SDES 202

int fan_rtcp_scan(struct fan_rtcp *rtcp, void *srtp, const char *data, int len) {
    uint8_t *p = (uint8_t *)rtcp->plain;
    int size = len;
    rtcp->count = 0;
    rtcp->plain_len = 0;
    if (len > FAN_PLAIN_MAX)
        return FAN_PASS;
    memcpy(p, data, len);
    if (srtp_unprotect_rtcp_fn(srtp, p, &size) != 0)
        return FAN_DROP;
    rtcp->plain_len = size;
    int pos = 0;
    while (pos < size) {
        if (size - pos < 4 || p[pos] >> 6 != 2)
            return FAN_PASS;  /* malformed: aiortc's parser says what to do */
        int type = p[pos + 1], count = p[pos] & 0x1F;
        int end = pos + 4 + 4 * (p[pos + 2] << 8 | p[pos + 3]);
        if (end > size)
            return FAN_PASS;
        if (type == RTCP_SR || type == RTCP_RR) {
            int at = pos + (type == RTCP_SR ? 28 : 8);
            if (at + 24 * count > end || rtcp->count + count > FAN_BLOCKS)
                return FAN_PASS;
            for (int i = 0; i < count; i++, at += 24) {
                struct fan_block *b = &rtcp->blocks[rtcp->count++];
                b->ssrc = be32(p + at);
                b->fraction = p[at + 4];
                int32_t lost = p[at + 5] << 16 | p[at + 6] << 8 | p[at + 7];
                b->lost = lost & 0x800000 ? lost - 0x1000000 : lost;
                b->highest = be32(p + at + 8);
                b->jitter = be32(p + at + 12);
                b->lsr = be32(p + at + 16);
                b->dlsr = be32(p + at + 20);
            }
        } else if (type != RTCP_SDES) {
            return FAN_PASS;  /* feedback or BYE: Python's */
        }
        pos = end;
    }
    return 0;
}
