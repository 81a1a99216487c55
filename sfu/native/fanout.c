/* See fanout.h. Runs on the event loop's thread, one packet at a time. */

#define _POSIX_C_SOURCE 200809L  /* clock_gettime under -std=c11 */

#include <errno.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <time.h>

#include "fanout.h"

#define RTP_MAX 1500              /* what a subscriber is sent at most */
#define SRTP_TRAILER_MAX 148      /* libsrtp's room for tag and MKI */
#define RESEND_MIN 0.01           /* seconds: the shortest RTT a resend waits */
#define RESEND_DEFAULT 0.1        /* ... and what it waits before an RTT is known */
#define SSRC_SWITCH 0.5           /* seconds an SSRC is silent before another replaces it */

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

static uint32_t be32(const uint8_t *p) {
    return (uint32_t)p[0] << 24 | (uint32_t)p[1] << 16 | (uint32_t)p[2] << 8 | p[3];
}

static void put16(uint8_t *p, uint16_t v) {
    p[0] = v >> 8;
    p[1] = v & 0xFF;
}

static void put32(uint8_t *p, uint32_t v) {
    put16(p, v >> 16);
    put16(p + 2, v & 0xFFFF);
}

/* The extended sequence number nearest to ``top`` whose low 16 bits are
 * ``seq`` (RFC 3711 3.3.1's index estimate). */
static int64_t extend(int64_t top, uint16_t seq) {
    return top + (int16_t)(uint16_t)(seq - (uint16_t)top);
}

int fan_rewrite(struct fan_downlink *sub, char *out, const char *payload, int size,
                int marker, int64_t index, uint32_t ts, int level) {
    const uint8_t *ext = sub->ext_plain;
    int ext_len = sub->plain_len;
    if (level >= 0 && sub->level_len) {
        ext = sub->ext_level;
        ext_len = sub->level_len;
    }
    int total = 12 + ext_len + size;
    if (total > RTP_MAX)
        return -1;
    uint8_t *p = (uint8_t *)out;
    p[0] = ext_len ? 0x90 : 0x80;
    p[1] = (uint8_t)((marker ? 0x80 : 0) | sub->pt);
    put16(p + 2, (uint16_t)(index + sub->ext_off));
    put32(p + 4, ts + sub->ts_off);
    put32(p + 8, sub->ssrc);
    memcpy(p + 12, ext, ext_len);
    if (ext == sub->ext_level)
        p[12 + sub->level_at] = (uint8_t)level;
    memcpy(p + 12 + ext_len, payload, size);
    return total;
}

/* --- the outgoing numbering: no SRTP index twice --------------------------- */

static int was_sent(const struct fan_downlink *sub, int64_t out) {
    uint64_t bit = (uint64_t)out % FAN_WINDOW;
    return sub->top - out < FAN_WINDOW && sub->sent[bit / 64] >> (bit % 64) & 1;
}

static void mark_sent(struct fan_downlink *sub, int64_t out) {
    uint64_t bit = (uint64_t)out % FAN_WINDOW;
    sub->sent[bit / 64] |= (uint64_t)1 << (bit % 64);
}

/* Move ``top`` up to ``out``, forgetting what falls out of the window. */
static void advance(struct fan_downlink *sub, int64_t out) {
    if (out - sub->top >= FAN_WINDOW) {
        memset(sub->sent, 0, sizeof sub->sent);
    } else {
        for (int64_t i = sub->top + 1; i <= out; i++) {
            uint64_t bit = (uint64_t)i % FAN_WINDOW;
            sub->sent[bit / 64] &= ~((uint64_t)1 << (bit % 64));
        }
    }
    sub->top = out;
}

/* The subscriber's offsets hold for this publication's current stream only
 * (its identity, and its epoch: a mute, an SSRC change). */
int fan_bound(const struct fan_downlink *sub, const struct fan_publication *pub) {
    return sub->active && sub->started && sub->pub_id == pub->id
           && sub->epoch == pub->epoch && sub->in_ssrc == pub->in_ssrc;
}

void fan_anchor(struct fan_downlink *sub, const struct fan_publication *pub, int64_t start) {
    if (!sub->started) {
        sub->started = 1;
        sub->first = start;
        sub->top = start - 1;
        memset(sub->sent, 0, sizeof sub->sent);
    }
    sub->floor = sub->top + 1;
    sub->ext_off = sub->floor - pub->index;
    sub->pub_id = pub->id;
    sub->epoch = pub->epoch;
    sub->in_ssrc = pub->in_ssrc;
    sub->active = 1;
}

int fan_header(struct fan_downlink *sub, int pt, int rtx_pt, const uint8_t *plain,
               int plain_len, const uint8_t *level, int level_len, int level_at) {
    if (pt < 0 || pt > 127 || rtx_pt < 0 || rtx_pt > 127 || plain_len < 0
        || plain_len > FAN_EXT_MAX || level_len < 0 || level_len > FAN_EXT_MAX
        || (level_len && (level_at < 0 || level_at >= level_len)))
        return -1;
    int changed = sub->pt != pt || sub->rtx_pt != rtx_pt || sub->plain_len != plain_len
                  || sub->level_len != level_len || sub->level_at != level_at
                  || memcmp(sub->ext_plain, plain, plain_len)
                  || memcmp(sub->ext_level, level, level_len);
    sub->pt = (uint8_t)pt;
    sub->rtx_pt = (uint8_t)rtx_pt;
    sub->plain_len = (uint8_t)plain_len;
    sub->level_len = (uint8_t)level_len;
    sub->level_at = (uint8_t)level_at;
    memcpy(sub->ext_plain, plain, plain_len);
    memcpy(sub->ext_level, level, level_len);
    /* what was sent under the old header is never sent again (a resend is the
     * same bytes or nothing); the numbering goes on above it */
    if (changed && sub->started)
        sub->floor = sub->top + 1;
    return 0;
}

/* The outgoing index of the publication's ``index`` for this subscriber, or
 * -1 when sending it would repeat or skip past what the numbering allows.
 * A jump forward is clamped (the numbering restarts): the subscriber sees a
 * gap it can recognise, never one that moves libsrtp's rollover counter. */
static int64_t next_index(struct fan_downlink *sub, int64_t index) {
    int64_t out = index + sub->ext_off;
    int64_t step = out - sub->top;
    if (step > FAN_MAX_JUMP) {
        sub->ext_off -= step - FAN_MAX_JUMP;
        sub->floor = sub->top + 1;
        sub->restarts++;
        return sub->top + FAN_MAX_JUMP;
    }
    if (step <= 0 && (out < sub->floor || was_sent(sub, out) || -step >= FAN_WINDOW))
        return -1;
    return out;
}

/* Count what the index says about the stream: continuous, after a gap (lost
 * upstream, not by us), or late (the newest stays the reference). */
static void track(struct fan_downlink *sub, int64_t out, uint32_t out_ts, double now,
                  int *flags) {
    if (out > sub->top) {
        if (out > sub->top + 1 && sub->top >= sub->first) {
            sub->gaps += out - sub->top - 1;
            sub->gap_pending = 1;
            *flags |= FAN_GAP;
        }
        advance(sub, out);
        sub->last_ts = out_ts;
        sub->last_at = now;
    }
    mark_sent(sub, out);
}

int fan_out(struct fan_publication *pub, struct fan_downlink **subs, int count, const char *payload,
            int size, int marker, uint32_t ts, int level, double now) {
    _Alignas(8) char buf[RTP_MAX + SRTP_TRAILER_MAX];
    int64_t index = pub->index;
    int flags = 0;
    for (int i = 0; i < count; i++) {
        struct fan_downlink *sub = subs[i];
        sub->skipped = !fan_bound(sub, pub) || !sub->srtp || sub->fd < 0;
        if (sub->skipped) {
            flags |= FAN_SKIPPED;
            continue;
        }
        int64_t out = next_index(sub, index);
        if (out < 0) {
            sub->refused_index++;
            continue;
        }
        sub->packets_sent++;
        sub->bytes_sent += size;
        /* a clamped jump moved ext_off: index + ext_off is ``out`` */
        int len = fan_rewrite(sub, buf, payload, size, marker, index, ts, level);
        if (len < 0 || srtp_protect_fn(sub->srtp, buf, &len) != 0) {
            sub->dropped++;
        } else {
            ssize_t sent = send(sub->fd, buf, len, MSG_DONTWAIT);
            if (sent < 0) {
                sub->dropped++;  /* UDP: a full buffer drops, it never blocks */
            } else {
                sub->wire_bytes += sent;
                sub->rtx_tokens += size;  /* each byte sent earns one resend byte */
                if (sub->rtx_tokens > FAN_RTX_BURST)
                    sub->rtx_tokens = FAN_RTX_BURST;
            }
        }
        track(sub, out, ts + sub->ts_off, now, &flags);
    }
    return flags;
}

/* --- receiving ---------------------------------------------------------------- */

struct fan_publication *fan_publication_new(void) {
    static uint64_t last_id;
    struct fan_publication *pub = calloc(1, sizeof(struct fan_publication));
    if (pub)
        pub->id = ++last_id;
    return pub;
}

void fan_publication_free(struct fan_publication *pub) {
    for (int i = 0; i < FAN_HISTORY; i++)
        free(pub->history[i].payload);
    free(pub);
}

static void keep(struct fan_publication *pub, const char *payload, int size, int marker,
                 uint32_t ts, uint32_t ssrc, int level) {
    struct fan_kept *k = &pub->history[(uint64_t)pub->index % FAN_HISTORY];
    if (k->size && k->index > pub->index)
        return;  /* a late packet: its place holds a newer one */
    k->size = 0;  /* unknown until the copy is made */
    if (size > k->cap) {
        char *grown = realloc(k->payload, size);
        if (!grown)
            return;
        k->payload = grown;
        k->cap = (uint16_t)size;
    }
    memcpy(k->payload, payload, size);
    k->index = pub->index;
    k->ssrc = ssrc;
    k->ts = ts;
    k->size = (uint16_t)size;
    k->marker = (uint8_t)marker;
    k->level = (int16_t)level;
}

int fan_publish(struct fan_publication *pub, const char *payload, int size, int marker,
                uint16_t seq, uint32_t ts, uint32_t ssrc, int level) {
    double now = clock_seconds(CLOCK_MONOTONIC);
    int flags = 0;
    if (pub->has_index && ssrc != pub->in_ssrc) {
        /* one stream at a time: another SSRC takes over only from a silent one
         * (a hostile publisher alternating SSRCs would resync every viewer on
         * every packet) */
        if (now - pub->in_last_at < SSRC_SWITCH) {
            pub->dropped_ssrc++;
            return FAN_DROP;
        }
        pub->has_index = 0;
        pub->epoch++;  /* another stream: every subscriber re-anchors */
    }
    int64_t index = pub->has_index ? extend(pub->top, seq) : seq;
    struct fan_kept *kept = &pub->history[(uint64_t)index % FAN_HISTORY];
    if (pub->has_index && kept->size && kept->index == index) {
        /* a sequence number again: what went out under it stays the only
         * packet of that number (a NACK resends it, byte for byte) */
        pub->duplicates++;
        return FAN_DROP;
    }
    pub->packets++;
    pub->bytes += size;
    if (pub->first_at == 0) {
        pub->first_at = now;
        flags |= FAN_FIRST;
    }
    pub->last_at = pub->in_last_at = now;
    if (!pub->has_index) {
        pub->has_index = 1;
        pub->in_ssrc = ssrc;
        pub->top = index;
    }
    pub->index = index;
    if (index > pub->top)
        pub->top = index;
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
        keep(pub, payload, size, marker, ts, ssrc, level);
        flags |= fan_out(pub, pub->subs, pub->count, payload, size, marker, ts, level,
                         now);
        pub->forwarded += pub->count;
    }
    pub->times[pub->times_n++ % FAN_TIMES] = clock_seconds(CLOCK_MONOTONIC) - now;
    return flags;
}

void fan_add_time(struct fan_publication *pub, double seconds) {
    if (pub->times_n)
        pub->times[(pub->times_n - 1) % FAN_TIMES] += seconds;
}

/* --- retransmission ----------------------------------------------------------- */

/* ``buf`` (an RTP packet of ``len`` bytes whose payload is ``size`` bytes)
 * as RTX (RFC 4588): the RTX payload type, SSRC and sequence number, and the
 * original sequence number before the payload. */
static int to_rtx(struct fan_downlink *sub, char *buf, int len, int size) {
    if (len + 2 > RTP_MAX)
        return -1;
    uint8_t *p = (uint8_t *)buf;
    int header = len - size;
    memmove(p + header + 2, p + header, size);
    memcpy(p + header, p + 2, 2);  /* the original sequence number */
    p[1] = (uint8_t)((p[1] & 0x80) | sub->rtx_pt);
    put16(p + 2, sub->rtx_seq++);
    put32(p + 8, sub->rtx_ssrc);
    return len + 2;
}

/* Resend what went out as ``seq``, if this binding sent it, the history still
 * holds it, it was not resent within the RTT and the budget allows. */
static int resend(struct fan_publication *pub, struct fan_downlink *sub, uint16_t seq, double now) {
    sub->nacked++;
    if (!fan_bound(sub, pub) || !sub->srtp || sub->fd < 0) {
        sub->nack_unknown++;  /* offsets of another stream, or none */
        return 0;
    }
    int64_t out = extend(sub->top, seq);
    if (out < sub->floor || out > sub->top || !was_sent(sub, out)) {
        sub->nack_unknown++;
        return 0;
    }
    int64_t index = out - sub->ext_off;
    struct fan_kept *k = &pub->history[(uint64_t)index % FAN_HISTORY];
    if (!k->size || k->index != index || k->ssrc != sub->in_ssrc) {
        sub->nack_unknown++;
        return 0;
    }
    int slot = (int)((uint64_t)out % FAN_HISTORY);
    double wait = sub->rtt_count ? sub->rtt : RESEND_DEFAULT;
    if (wait < RESEND_MIN)
        wait = RESEND_MIN;
    if (sub->resent_idx[slot] == (uint32_t)out && sub->resent_at[slot] > 0
        && now - sub->resent_at[slot] < wait) {
        sub->nack_repeated++;
        return 0;
    }
    if (sub->rtx_tokens < k->size) {
        sub->nack_over_budget++;
        return 0;
    }
    _Alignas(8) char buf[RTP_MAX + SRTP_TRAILER_MAX];
    int len = fan_rewrite(sub, buf, k->payload, k->size, k->marker, index, k->ts,
                          k->level);
    void *session = sub->srtp;
    if (len >= 0 && sub->rtx_pt && sub->rtx_srtp) {
        len = to_rtx(sub, buf, len, k->size);
        session = sub->rtx_srtp;
    }
    sub->resent_idx[slot] = (uint32_t)out;
    sub->resent_at[slot] = now;
    sub->rtx_tokens -= k->size;
    if (len < 0 || srtp_protect_fn(session, buf, &len) != 0) {
        sub->dropped++;
        return 0;
    }
    ssize_t sent = send(sub->fd, buf, len, MSG_DONTWAIT);
    if (sent < 0) {
        sub->dropped++;
        return 0;
    }
    sub->retransmitted_packets++;
    sub->retransmitted_bytes += k->size;
    sub->retransmitted_wire += sent;
    return 1;
}

int fan_nack(struct fan_publication *pub, struct fan_downlink *sub, uint16_t pid, uint16_t blp,
             double now) {
    int sent = resend(pub, sub, pid, now);
    for (int bit = 0; bit < 16; bit++)
        if (blp >> bit & 1)
            sent += resend(pub, sub, (uint16_t)(pid + bit + 1), now);
    return sent;
}

/* --- reception statistics -------------------------------------------------------- */

void fan_stream_add(struct fan_stream *s, uint16_t seq, uint32_t ts) {
    uint16_t step = (uint16_t)(seq - s->max_seq);
    int in_order = !s->has_max || (step && step < 0x8000);
    double now = clock_seconds(CLOCK_REALTIME);
    s->packets_received++;
    if (!s->has_base) {
        s->has_base = 1;
        s->base_seq = seq;
    }
    if (s->clockrate)
        s->transits[s->transits_n++ % FAN_TRANSITS] =
            (int64_t)(now * 1e6) - (int64_t)ts * 1000000 / s->clockrate;
    if (!in_order) {
        uint16_t behind = (uint16_t)(s->max_seq - seq);
        if (behind && behind < 0x8000) {
            s->reordered++;
            if (behind >= 3)
                s->late++;
        }
        return;
    }
    if (s->has_max && step > 1) {
        s->gaps++;
        s->gap_packets += step - 1u;
    }
    int64_t arrival = (int64_t)(now * s->clockrate);
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

/* --- a publish connection's SSRCs ------------------------------------------------ */

int fan_route(struct fan_rx *rx, uint32_t ssrc, int pt, struct fan_stream *stream,
              struct fan_publication *pub) {
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

void fan_unroute(struct fan_rx *rx, struct fan_publication *pub) {
    for (int i = 0; i < rx->count; i++)
        if (rx->routes[i].pub == pub)
            rx->routes[i--] = rx->routes[--rx->count];
}

int fan_admitted(const struct fan_rx *rx, uint32_t ssrc) {
    for (int i = 0; i < rx->ssrc_count; i++)
        if (rx->ssrcs[i] == ssrc)
            return 1;
    return 0;
}

int fan_admit(struct fan_rx *rx, uint32_t ssrc, int negotiated) {
    if (fan_admitted(rx, ssrc))
        return 0;
    if (rx->ssrc_count == FAN_SSRCS || (!negotiated && rx->margin <= 0))
        return -1;
    if (!negotiated)
        rx->margin--;
    rx->ssrcs[rx->ssrc_count++] = ssrc;
    return 0;
}

/* Whether Python may take one more datagram now (a token bucket of
 * ``py_rate`` per second, as deep as one second); ``take`` spends it. */
static int py_budget(struct fan_rx *rx, double now, int take) {
    if (rx->py_rate <= 0)
        return 1;
    double tokens = rx->py_tokens + (now - rx->py_at) * rx->py_rate;
    if (tokens > rx->py_rate)
        tokens = rx->py_rate;
    rx->py_tokens = tokens;
    rx->py_at = now;
    if (tokens < 1)
        return 0;
    if (take)
        rx->py_tokens -= 1;
    return 1;
}

int fan_python(struct fan_rx *rx, double now) {
    if (py_budget(rx, now, 1))
        return 1;
    rx->py_dropped++;
    return 0;
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

static int is_rtp(const uint8_t *in, int len) {
    return len >= 12 && in[0] >= 128 && in[0] <= 191 && !(in[1] >= 192 && in[1] <= 223);
}

/* The route C takes this datagram by (routed RTP, not RTCP), or NULL. */
static struct fan_route *route_of(struct fan_rx *rx, const uint8_t *in, int len) {
    if (!is_rtp(in, len) || len > FAN_PLAIN_MAX)
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

/* RTP of an SSRC that may not be sent (not negotiated, no margin left). */
static int refused(struct fan_rx *rx, const uint8_t *in, int len) {
    if (!is_rtp(in, len))
        return 0;
    uint32_t ssrc = be32(in + 8);
    if (fan_admitted(rx, ssrc) || rx->margin > 0)
        return 0;
    rx->refused_ssrc++;
    rx->refused_last = ssrc;
    return 1;
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
    const uint8_t *in = (const uint8_t *)data;
    if (refused(rx, in, len))
        return FAN_DROP;
    struct fan_route *route = route_of(rx, in, len);
    if (route)
        return ingest(rx, route, srtp, data, len, level_id);
    return fan_python(rx, clock_seconds(CLOCK_MONOTONIC)) ? FAN_PASS : FAN_DROP;
}

/* Read and forward the routed RTP waiting on ``fd``, until the socket is
 * empty (FAN_EMPTY), the next datagram is Python's (FAN_PASS, left unread
 * for Python's reader: STUN, DTLS, RTCP, an SSRC not routed) or a packet
 * leaves work to Python (its flags, and it in ``plain``). RTP of an SSRC not
 * admitted, and what Python has no budget for, is read and dropped here. */
int fan_drain(struct fan_rx *rx, int fd, void *srtp, int level_id) {
    for (;;) {
        uint8_t head[12];
        ssize_t n = recv(fd, head, sizeof head, MSG_PEEK | MSG_DONTWAIT | MSG_TRUNC);
        if (n < 0)
            return errno == EAGAIN || errno == EWOULDBLOCK ? FAN_EMPTY : FAN_PASS;
        int peeked = n < 12 ? (int)n : 12;
        struct fan_route *route = n > FAN_PLAIN_MAX ? NULL : route_of(rx, head, peeked);
        double now = clock_seconds(CLOCK_MONOTONIC);
        if (!route) {
            int media = n > 0 && head[0] >= 128 && head[0] <= 191;  /* RTP, RTCP */
            if (!refused(rx, head, peeked)) {
                if (!media || py_budget(rx, now, 0))
                    return FAN_PASS;
                rx->py_dropped++;
            }
            recv(fd, rx->raw, FAN_PLAIN_MAX, MSG_DONTWAIT);
            continue;
        }
        n = recv(fd, rx->raw, FAN_PLAIN_MAX, MSG_DONTWAIT);
        if (n < 0)
            return FAN_PASS;  /* asyncio's reader reports the error */
        rx->last_at = now;
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

void fan_sr_sent(struct fan_downlink *sub, uint32_t ntp_middle, double wall) {
    sub->sr_ntp[sub->sr_next] = ntp_middle;
    sub->sr_wall[sub->sr_next] = wall;
    sub->sr_next = (sub->sr_next + 1) % FAN_SR_KEPT;
}

/* A report block about this stream, arrived at ``wall``: kept as the latest,
 * and an RTT from the SR it answers (RFC 3550 6.4.1: now - LSR - DLSR, with
 * our own send time for LSR). */
void fan_report(struct fan_downlink *sub, const struct fan_block *block, double wall) {
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
#define RTCP_RTPFB 205
#define RTPFB_NACK 1

int fan_rtcp_scan(struct fan_rtcp *rtcp, void *srtp, const char *data, int len) {
    _Alignas(8) uint8_t p[FAN_PLAIN_MAX];
    int size = len;
    rtcp->count = rtcp->nacks = rtcp->plain_len = 0;
    if (len > FAN_PLAIN_MAX)
        return FAN_DROP;
    memcpy(p, data, len);
    if (srtp_unprotect_rtcp_fn(srtp, p, &size) != 0)
        return FAN_DROP;
    int pos = 0;
    while (pos < size) {
        if (size - pos < 4 || p[pos] >> 6 != 2)
            return FAN_DROP;  /* malformed: nothing of it is used */
        int type = p[pos + 1], count = p[pos] & 0x1F;
        int end = pos + 4 + 4 * (p[pos + 2] << 8 | p[pos + 3]);
        if (end > size)
            return FAN_DROP;
        if (type == RTCP_SR || type == RTCP_RR) {
            int at = pos + (type == RTCP_SR ? 28 : 8);
            if (at + 24 * count > end || rtcp->count + count > FAN_BLOCKS)
                return FAN_DROP;
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
        } else if (type == RTCP_RTPFB && count == RTPFB_NACK) {
            if (end - pos < 12)
                return FAN_DROP;
            uint32_t media = be32(p + pos + 8);
            for (int at = pos + 12, first = 1; at + 4 <= end; at += 4, first = 0) {
                if (rtcp->nacks == FAN_NACKS) {
                    rtcp->nacks_ignored++;
                    continue;
                }
                rtcp->nack[rtcp->nacks++] = (struct fan_nack_item){
                    media, (uint16_t)(p[at] << 8 | p[at + 1]),
                    (uint16_t)(p[at + 2] << 8 | p[at + 3]), first};
            }
        } else if (type != RTCP_SDES) {
            /* other feedback or BYE: Python's, in a compound of its own */
            memcpy(rtcp->plain + rtcp->plain_len, p + pos, end - pos);
            rtcp->plain_len += end - pos;
        }
        pos = end;
    }
    return rtcp->plain_len ? FAN_PASS : 0;
}
