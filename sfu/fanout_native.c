/* See fanout_native.h. Runs on the event loop's thread, one packet at a time. */

#include <string.h>
#include <sys/socket.h>

#include "fanout_native.h"

#define RTP_MAX 1500              /* what a subscriber is sent at most */
#define SRTP_TRAILER_MAX 148      /* libsrtp's room for tag and MKI */

typedef int (*protect_fn)(void *ctx, void *rtp, int *len);
static protect_fn srtp_protect_fn;

void fan_init(uintptr_t srtp_protect) {
    srtp_protect_fn = (protect_fn)srtp_protect;
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
