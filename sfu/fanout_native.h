/* The fast path's per-packet loop in C: for every subscriber of a publication,
 * rewrite the RTP header, SRTP-protect and send, in one call from Python.
 * Python owns every struct here (allocated with cffi) and decides when a
 * subscriber is in sync ("active"); this code only reads and counts. */

#include <stdint.h>

#define FAN_EXT_MAX 32

struct fan_sub {
    /* set by Python: where and how to send */
    void *srtp;                   /* the subscriber's srtp_t; NULL: not ready */
    int fd;                       /* connected UDP socket (our dup); -1: none */
    int active;                   /* offsets valid for in_ssrc: C sends */
    int epoch;                    /* the publication's epoch they are for */
    uint32_t in_ssrc;             /* the publisher's SSRC they are for */
    uint32_t ssrc;                /* the subscriber's sender SSRC */
    uint32_t ts_off;
    uint16_t seq_off;
    uint8_t pt;
    uint8_t plain_len;            /* header extension block without a level */
    uint8_t level_len;            /* ... and with one (0: none negotiated) */
    uint8_t level_at;             /* offset of the level byte in ext_level */
    uint8_t ext_plain[FAN_EXT_MAX];
    uint8_t ext_level[FAN_EXT_MAX];
    /* kept by C: what was sent */
    int has_last;
    uint16_t last_seq;
    uint32_t last_ts;
    double last_at;
    int64_t first_seq;
    int64_t ext_seq;
    uint64_t packets_sent;        /* counted for sender reports, sent or not */
    uint64_t bytes_sent;          /* payload octets, likewise */
    uint64_t wire_bytes;          /* what reached the socket */
    uint64_t dropped;             /* refused: too long, SRTP, socket */
    uint64_t gaps;                /* sequence numbers skipped upstream */
    int gap_pending;              /* a gap Python has not recorded yet */
    int skipped;                  /* the last packet was left to Python */
};

/* flags fan_out returns */
#define FAN_SKIPPED 1             /* a subscriber was skipped: Python's turn */
#define FAN_GAP 2                 /* a subscriber has gap_pending set */

void fan_init(uintptr_t srtp_protect);
int fan_out(struct fan_sub **subs, int count, const char *payload, int size,
            int marker, uint16_t seq, uint32_t ts, uint32_t ssrc, int level,
            int epoch, double now);
int fan_rewrite(struct fan_sub *sub, char *out, const char *payload, int size,
                int marker, uint16_t seq, uint32_t ts, int level);
