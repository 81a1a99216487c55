/* The fast path in C: a publisher's packet from the socket (unprotect, parse,
 * reception statistics, levels) and, for every subscriber of its publication,
 * rewrite the RTP header, SRTP-protect and send, in one call from Python.
 * Python owns every struct here (allocated with cffi, or fan_publication_new under
 * ffi.gc) and decides which SSRCs C takes (routes) and when a subscriber is
 * in sync ("active"); this code reads, counts, keeps the NACK history and
 * enforces what a hostile peer must never obtain: two packets under one SRTP
 * index, retransmissions beyond a budget, SSRCs beyond the negotiated ones. */

#include <stdint.h>

#define FAN_EXT_MAX 32
#define FAN_SR_KEPT 8             /* sender reports remembered for RTT */
#define FAN_HISTORY 512           /* received packets kept for NACKs (a power of two) */
#define FAN_WINDOW 1024           /* SRTP indexes a subscriber remembers sending */
#define FAN_MAX_JUMP 512          /* a forward step past this restarts the numbering */
#define FAN_RTX_BURST 32768       /* retransmission bytes a subscriber may save up */

/* one RTCP report block (RFC 3550 6.4.1) */
struct fan_block {
    uint32_t ssrc;
    uint8_t fraction;
    int32_t lost;
    uint32_t highest;
    uint32_t jitter;
    uint32_t lsr;
    uint32_t dlsr;
};

/* One subscriber m-line. Its outgoing RTP is numbered by extended sequence
 * numbers (RFC 3711 3.3.1: the SRTP index, rollover counter included), and C
 * keeps the invariant that no index is ever used twice for different bytes:
 * an index above ``top`` advances it; one below is sent only if it is at or
 * above ``floor`` (where the current offsets began), within the window and
 * not sent yet; a retransmission only repeats an index this binding sent,
 * byte for byte, or goes out as RTX with numbers of its own. */
struct fan_downlink {
    /* set by Python: where to send, and the stream's place in time */
    void *srtp;                   /* the subscriber's srtp_t; NULL: not ready */
    void *rtx_srtp;               /* the session RTX goes through (aiortc's) */
    int fd;                       /* connected UDP socket (our dup); -1: none */
    int active;                   /* 0: paused (unbound, renegotiating): C skips it */
    uint32_t ssrc;                /* the subscriber's sender SSRC */
    uint32_t rtx_ssrc;
    uint32_t ts_off;
    /* set through fan_header: what every packet's header carries */
    uint8_t pt;
    uint8_t rtx_pt;               /* 0: no RTX negotiated */
    uint8_t plain_len;            /* header extension block without a level */
    uint8_t level_len;            /* ... and with one (0: none negotiated) */
    uint8_t level_at;             /* offset of the level byte in ext_level */
    uint8_t ext_plain[FAN_EXT_MAX];
    uint8_t ext_level[FAN_EXT_MAX];
    /* set through fan_anchor: the publication's stream the offsets are for */
    uint64_t pub_id;
    int epoch;
    uint32_t in_ssrc;
    /* kept by C: the outgoing numbering (see above) */
    int started;                  /* top, floor and ext_off are set */
    int64_t ext_off;              /* outgoing index = publication's index + ext_off */
    int64_t first;                /* the first index ever sent */
    int64_t top;                  /* the highest index sent */
    int64_t floor;                /* the lowest index the current offsets may send */
    uint64_t sent[FAN_WINDOW / 64];  /* which of the indexes up to top were sent */
    uint16_t rtx_seq;
    uint32_t last_ts;
    double last_at;
    uint64_t packets_sent;        /* counted for sender reports, sent or not */
    uint64_t bytes_sent;          /* payload octets, likewise */
    uint64_t wire_bytes;          /* what reached the socket */
    uint64_t dropped;             /* refused: too long, SRTP, socket */
    uint64_t refused_index;       /* not sent: its index was used or is out of reach */
    uint64_t restarts;            /* numbering restarted after a jump */
    uint64_t gaps;                /* sequence numbers skipped upstream */
    int gap_pending;              /* a gap Python has not recorded yet */
    int skipped;                  /* the last packet was left to Python */
    /* retransmission (NACK): what was resent, when, and the budget */
    int64_t rtx_tokens;           /* bytes that may be resent now */
    uint32_t resent_idx[FAN_HISTORY];  /* low 32 bits of a resent index ... */
    double resent_at[FAN_HISTORY];     /* ... and when (monotonic seconds) */
    uint64_t nack_count;          /* NACK packets received (W3C nackCount) */
    uint64_t nacked;              /* sequence numbers asked for */
    uint64_t retransmitted_packets;
    uint64_t retransmitted_bytes; /* payload octets resent (W3C) */
    uint64_t retransmitted_wire;  /* what the resends put on the wire */
    uint64_t nack_unknown;        /* asked for what is not (or no longer) known */
    uint64_t nack_repeated;       /* asked again within the RTT */
    uint64_t nack_over_budget;    /* refused for the budget */
    /* the subscriber's receiver reports about this stream */
    uint64_t reports;
    struct fan_block report;      /* the latest */
    double report_at;             /* its arrival, wall-clock seconds */
    double rtt;                   /* smoothed; none until rtt_count */
    double rtt_total;
    uint64_t rtt_count;
    uint32_t sr_ntp[FAN_SR_KEPT]; /* sender reports sent: NTP middle 32 bits */
    double sr_wall[FAN_SR_KEPT];  /* ... and when, wall-clock seconds */
    int sr_next;
};

/* flags fan_out returns */
#define FAN_SKIPPED 1             /* a subscriber was skipped: Python's turn */
#define FAN_GAP 2                 /* a subscriber has gap_pending set */

struct fan_publication;

void fan_init(uintptr_t srtp_protect, uintptr_t srtp_unprotect,
              uintptr_t srtp_unprotect_rtcp);
int fan_out(struct fan_publication *pub, struct fan_downlink **subs, int count, const char *payload,
            int size, int marker, uint32_t ts, int level, double now);
int fan_bound(const struct fan_downlink *sub, const struct fan_publication *pub);
void fan_anchor(struct fan_downlink *sub, const struct fan_publication *pub, int64_t start);
int fan_header(struct fan_downlink *sub, int pt, int rtx_pt, const uint8_t *plain,
               int plain_len, const uint8_t *level, int level_len, int level_at);
int fan_rewrite(struct fan_downlink *sub, char *out, const char *payload, int size,
                int marker, int64_t index, uint32_t ts, int level);
void fan_sr_sent(struct fan_downlink *sub, uint32_t ntp_middle, double wall);
void fan_report(struct fan_downlink *sub, const struct fan_block *block, double wall);

/* --- receiving: a publisher's packet, from the socket to every subscriber --- */

#define FAN_TIMES 2048            /* fan-out durations kept (seconds) */
#define FAN_ROUTES 8              /* SSRCs of one publish connection taken in C */
#define FAN_SSRCS 16              /* SSRCs one publish connection may send */
#define FAN_PLAIN_MAX 1648        /* a received datagram (MTU and SRTP trailer) */

#define FAN_TRANSITS 256          /* packets' transit times kept (a power of two) */

/* aiortc's StreamStatistics (RTP reception statistics, RFC 3550 A.3/A.8),
 * kept here so that C and Python count in one place; and what RFC 3550's
 * jitter (in-order packets only) misses: packets that arrive behind newer
 * ones, late, and every packet's transit time (arrival minus RTP time), from
 * which the diagnosis reads the spread of delay listeners' buffers must hide */
struct fan_stream {
    int has_base;
    uint16_t base_seq;
    int has_max;
    uint16_t max_seq;
    int64_t cycles;
    uint64_t packets_received;
    uint32_t clockrate;
    int64_t jitter_q4;
    int has_last;
    int64_t last_arrival;
    uint32_t last_timestamp;
    uint64_t reordered;           /* arrived behind a newer packet */
    uint64_t late;                /* ... behind three or more newer packets */
    uint64_t gaps;                /* in-order arrivals after missing numbers */
    uint64_t gap_packets;         /* the numbers those gaps skipped */
    uint64_t transits_n;          /* transit times recorded, ever */
    int64_t transits[FAN_TRANSITS];  /* microseconds, arrival - RTP time */
};

/* RFC 6464 levels (-dBov) of an audio publication since Python last read them */
struct fan_levels {
    int loudest;
    int tick_packets;
    int64_t sum;
    int packets;
    int voice;                    /* packets at or over the speaking level */
};

/* one received packet, kept for NACKs; the payload is this struct's own copy */
struct fan_kept {
    int64_t index;                /* the publication's extended sequence number */
    uint32_t ssrc;
    uint32_t ts;
    uint16_t size;
    uint16_t cap;
    uint8_t marker;
    int16_t level;
    char *payload;
};

/* One publication: counters, levels, the NACK history and its fast-path
 * subscribers (an array Python owns). Made by fan_publication_new, freed by
 * fan_publication_free (Python ties it to the publication with ffi.gc). */
struct fan_publication {
    uint64_t id;                  /* unique in the process: subscribers bind to it */
    struct fan_downlink **subs;
    int count;
    int epoch;                    /* bumped when the stream restarts (mute, SSRC) */
    int muted;
    int python;                   /* 1: every packet through Python (taps, track senders) */
    int metered;                  /* 1: count audio levels */
    int speaking_dbov;            /* -dBov at or under which a packet is voice */
    uint32_t in_ssrc;             /* the SSRC forwarded, whose ``index`` is extended */
    int has_index;
    double in_last_at;            /* when a packet of in_ssrc last came */
    uint64_t dropped_ssrc;        /* packets of another SSRC while in_ssrc is live */
    uint64_t duplicates;          /* packets of a sequence number already kept */
    int64_t top;                  /* the highest extended sequence number received */
    int64_t index;                /* that of the packet being handled now */
    uint64_t packets;
    uint64_t bytes;               /* payload octets */
    uint64_t forwarded;           /* copies handed to the fast path's subscribers */
    uint64_t dropped_muted;
    double first_at;              /* monotonic seconds; 0: none yet */
    double last_at;
    struct fan_levels levels;
    uint64_t times_n;             /* fan-out durations recorded, ever */
    double times[FAN_TIMES];
    struct fan_kept history[FAN_HISTORY];
};

struct fan_route {
    uint32_t ssrc;
    int pt;
    struct fan_stream *stream;
    struct fan_publication *pub;
};

/* A publish connection's SSRCs: those it may send (the negotiated ones, and
 * ``margin`` more once a packet of theirs authenticates), those C takes off
 * the socket (routes), where the last packet it unprotected is left for
 * Python's slow path, and the budget of packets Python handles. */
struct fan_rx {
    uint64_t drained;             /* datagrams fan_drain read, and their bytes */
    uint64_t drained_bytes;
    double last_at;               /* monotonic seconds of the last of them */
    int count;
    struct fan_route routes[FAN_ROUTES];
    int ssrc_count;
    int margin;
    uint32_t ssrcs[FAN_SSRCS];
    uint64_t refused_ssrc;        /* RTP of an SSRC not admitted, dropped */
    uint32_t refused_last;        /* ... the last such SSRC */
    double py_rate;               /* packets per second Python may take (0: any) */
    double py_tokens;
    double py_at;
    uint64_t py_dropped;          /* dropped for that budget */
    int plain_len;
    char plain[FAN_PLAIN_MAX];
    char raw[FAN_PLAIN_MAX];      /* what fan_drain reads into */
};

/* more flags fan_publish and fan_ingest return */
#define FAN_FIRST 4               /* the publication's first packet */
#define FAN_MUTED 8               /* counted, not forwarded */
#define FAN_PASS 16               /* not taken: Python's path, nothing consumed */
#define FAN_DROP 32               /* refused (SRTP, malformed, SSRC): nothing to do */
#define FAN_EMPTY 64              /* fan_drain: the socket has nothing more */

struct fan_publication *fan_publication_new(void);
void fan_publication_free(struct fan_publication *pub);
int fan_publish(struct fan_publication *pub, const char *payload, int size, int marker,
                uint16_t seq, uint32_t ts, uint32_t ssrc, int level);
void fan_add_time(struct fan_publication *pub, double seconds);
int fan_nack(struct fan_publication *pub, struct fan_downlink *sub, uint16_t pid, uint16_t blp,
             double now);
void fan_stream_add(struct fan_stream *stream, uint16_t seq, uint32_t ts);
int fan_route(struct fan_rx *rx, uint32_t ssrc, int pt, struct fan_stream *stream,
              struct fan_publication *pub);
void fan_unroute(struct fan_rx *rx, struct fan_publication *pub);
int fan_admit(struct fan_rx *rx, uint32_t ssrc, int negotiated);
int fan_admitted(const struct fan_rx *rx, uint32_t ssrc);
int fan_python(struct fan_rx *rx, double now);
int fan_ingest(struct fan_rx *rx, void *srtp, const char *data, int len, int level_id);
int fan_drain(struct fan_rx *rx, int fd, void *srtp, int level_id);

/* --- receiving RTCP from a subscriber: report blocks and NACKs taken in C --- */

#define FAN_BLOCKS 64             /* report blocks read from one compound packet */
#define FAN_NACKS 64              /* NACK items read from one compound packet */

/* one generic NACK item (RFC 4585 6.2.1) */
struct fan_nack_item {
    uint32_t media_ssrc;
    uint16_t pid;
    uint16_t blp;
    int first;                    /* the first item of its NACK packet */
};

/* A subscribe connection's SRTCP, unprotected: its report blocks and NACK
 * items, and the other feedback (PLI, FIR, REMB, BYE, ...) as a compound of
 * its own for Python to parse. */
struct fan_rtcp {
    int count;
    struct fan_block blocks[FAN_BLOCKS];
    int nacks;
    struct fan_nack_item nack[FAN_NACKS];
    uint64_t nacks_ignored;       /* items beyond FAN_NACKS */
    int plain_len;                /* the other feedback, if any */
    char plain[FAN_PLAIN_MAX];
};

int fan_rtcp_scan(struct fan_rtcp *rtcp, void *srtp, const char *data, int len);
