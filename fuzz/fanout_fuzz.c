/* A coverage-guided fuzzer (libFuzzer, ASan, UBSan) for the fast path in
 * sfu/native/fanout.c; scripts/fuzz builds and runs it.
 *
 * An input is a setup byte, then operations: an op byte and its arguments
 * (the encoding is in the comments of the OP_ names and of the readers they
 * use; make_corpus.py writes seeds in it). They act on a world kept for the
 * input: up to two publications (struct fan_publication), four subscriber m-lines
 * (struct fan_downlink, each sending on its own AF_UNIX datagram socketpair),
 * one publish connection (struct fan_rx, with a socketpair fan_drain reads)
 * and one subscribe connection's RTCP (struct fan_rtcp). The calls are
 * Python's, made as Python makes them (fanout.py, publication.py,
 * aiortc_seam.py), including its reactions to what C returns: a skipped
 * subscriber written to and resynced, a packet left in rx->plain parsed and
 * finished, a datagram C left read by asyncio.
 *
 * SRTP is a stub: unprotect accepts a packet whose last TAG_LEN bytes are a
 * checksum of the rest, and strips them; protect appends one. The protect
 * stub checks what the module promises: per subscriber, no SRTP index (the
 * SSRC and the sequence number extended against the highest sent, as libsrtp
 * extends it) is protected twice for different bytes, and an RTX packet
 * rebuilds into what went out under the index it repeats.
 *
 * What Python guarantees, and the harness therefore keeps:
 * - a subscriber's ts_off changes only in FanoutSender._resync, with a
 *   fan_anchor; its header (payload types, extension blocks) only through
 *   fan_header; srtp, rtx_srtp and fd as SendHook sets them (active is also
 *   toggled at random: C checks the rest);
 * - ssrc and rtx_ssrc are aiortc's, fixed per m-line and distinct, and a new
 *   m-line never reuses one;
 * - the extension blocks are fanout.one_byte_extensions of the mid and the
 *   level, with the ids the answer gave: the subscribe offer is the
 *   server's, so the mid is aiortc's ("0", "1", ...), fixed per m-line and
 *   at most 16 bytes here, which keeps both blocks within FAN_EXT_MAX and
 *   level_at inside ext_level;
 * - fan_publish gets a payload of at least one byte (aiortc drops
 *   padding-only probes) and what parse_rtp read, as C's ingest reads it;
 * - routes are made by a publication's own receive hook, and a publication is
 *   unrouted and its subscribers detached before fan_publication_free;
 * - fan_out is called only by FanoutSender.write, for the packet just
 *   published, and fan_nack with the subscriber's current publication.
 * What Python does not guarantee, neither does the harness: a renegotiation
 * (SendHook._on_send, _configure) changes the header of a subscriber that is
 * sending, and bind() moves one to another publication, each without a
 * fan_anchor until the next packet's resync, if any: C's invariants must
 * hold across both. */

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

/* The module is compiled in, with a clock the input moves: SSRC_SWITCH and
 * the budgets are reached without waiting, and a crash replays exactly. */
static int fuzz_clock_gettime(clockid_t clock, struct timespec *t);
#define clock_gettime fuzz_clock_gettime
#include "fanout.c"
#undef clock_gettime

#define PUBS 2
#define SUBS 4
#define KNOWN 4                   /* publisher SSRCs (and receive hooks) inputs use */
#define TAG_LEN 10                /* the stub's SRTP authentication tag */
#define STORE_MAX (32 << 20)      /* bytes of sent packets kept per input */
#define WALL_BASE 1.7e9           /* wall clock = monotonic clock + this */
#define NTP_EPOCH 2208988800.0    /* seconds from 1900 to 1970 */
#define DATAGRAM_MAX 4096

static const uint32_t known_ssrc[KNOWN] = {0x1111AAAA, 0x2222BBBB, 0x3333CCCC, 0x4444DDDD};
static const uint8_t known_pt[4] = {111, 96, 0, 127};
static const uint32_t clockrates[KNOWN] = {48000, 90000, 8000, 16000};
static const int level_ids[8] = {-1, 1, 2, 3, 14, 15, 100, 255};
static const double py_rates[8] = {0, 2000, 500, 50, 5, 1, 0.5, 0};
static const double steps[16] = {0,    0.001, 0.005, 0.009, 0.011, 0.02, 0.05, 0.099,
                                 0.101, 0.2,  0.49,  0.51,  1,     2,    10,   100};

#define require(cond, what)                                             \
    do {                                                                \
        if (!(cond)) {                                                  \
            fprintf(stderr, "fanout_fuzz: invariant broken: %s\n", what); \
            __builtin_trap();                                           \
        }                                                               \
    } while (0)

/* --- the world ------------------------------------------------------------ */

/* one SRTP index protected, and the plaintext it was protected for */
struct record {
    int64_t index;
    int len;
    uint8_t *bytes;               /* NULL: free slot */
};

/* an SSRC's indexes a subscriber protected (open addressing on index) */
struct sent {
    int64_t top;
    int count, cap;
    struct record *table;
};

struct subscriber;
struct session {                  /* what a stub SRTP context points to */
    struct subscriber *sub;
    int own;                      /* own_session(): that SSRC's stream only */
};

struct subscriber {
    struct fan_downlink *native;       /* NULL: free slot */
    int sock, peer;               /* the socketpair: native->fd while ready, and ours */
    int pub;                      /* the bound publication, -1: none */
    int mid_len;                  /* its mid: aiortc's, fixed */
    int video;                    /* waits for a keyframe after each bind */
    int awaiting;                 /* ... and is waiting now */
    int released;                 /* SendHook.detach: never ready again */
    int has_codec;                /* negotiated the publication's codec */
    uint8_t codec_pt, codec_rtx;
    int selected;                 /* FanoutSender._pt is not None */
    uint8_t plain[FAN_EXT_MAX], level[FAN_EXT_MAX];  /* FanoutSender._extensions */
    int plain_len, level_len, level_at;
    int refuse;                   /* protect fails, as libsrtp may */
    struct session own, shared;   /* native->srtp and native->rtx_srtp */
    struct sent sent[2];          /* its ssrc's and its rtx_ssrc's */
};

static struct {
    double mono;
    uint64_t rng;
    uint32_t serial;              /* m-lines made, for fresh SSRCs */
    size_t stored;                /* bytes in the records */
    struct fan_publication *pubs[PUBS];
    struct fan_downlink *groups[PUBS][SUBS];  /* pub->subs, as FanoutGroup builds it */
    struct subscriber subs[SUBS];
    struct fan_stream streams[KNOWN];
    struct fan_rx rx;
    int rx_sock[2];               /* [0] is the publish socket C reads */
    struct fan_rtcp rtcp;
    uint16_t seq[KNOWN];
    uint32_t ts[KNOWN];
} w;

/* the contexts unprotect gets: only their address matters */
static int rx_session, rtcp_session;

static int fuzz_clock_gettime(clockid_t clock, struct timespec *t) {
    double s = w.mono + (clock == CLOCK_REALTIME ? WALL_BASE : 0);
    t->tv_sec = (time_t)s;
    t->tv_nsec = (long)((s - (double)t->tv_sec) * 1e9);
    return 0;
}

static double wall(void) {
    return w.mono + WALL_BASE;
}

/* Python's random numbers (offsets, starts), from the input's own sequence */
static uint32_t rng(void) {
    w.rng ^= w.rng << 13;
    w.rng ^= w.rng >> 7;
    w.rng ^= w.rng << 17;
    return (uint32_t)(w.rng >> 16);
}

/* --- reading the input ---------------------------------------------------- */

struct input {
    const uint8_t *p, *end;
};

static unsigned u8(struct input *in) {
    return in->p < in->end ? *in->p++ : 0;
}

static unsigned u16(struct input *in) {
    unsigned hi = u8(in);
    return hi << 8 | u8(in);
}

static uint32_t u32(struct input *in) {
    uint32_t hi = u16(in);
    return hi << 16 | u16(in);
}

static double step(struct input *in) {
    w.mono += steps[u8(in) & 15];
    return w.mono;
}

static struct subscriber *sub_of(struct input *in) {
    struct subscriber *s = &w.subs[u8(in) % SUBS];
    return s->native ? s : NULL;
}

/* --- SRTP stubs and the invariant ----------------------------------------- */

static void checksum(uint8_t seed, const uint8_t *p, int n, uint8_t *tag) {
    uint64_t h = 0xCBF29CE484222325ULL ^ seed;
    for (int i = 0; i < n; i++)
        h = (h ^ p[i]) * 0x100000001B3ULL;
    for (int i = 0; i < TAG_LEN; i++)
        tag[i] = (uint8_t)(h >> (6 * i));
}

enum { SEED_RTP = 1, SEED_RTCP = 2 };  /* SRTP and SRTCP have keys of their own */

static int unprotect(uint8_t seed, void *buf, int *len) {
    uint8_t want[TAG_LEN];
    int n = *len - TAG_LEN;
    if (n < 0)
        return 1;
    checksum(seed, buf, n, want);
    if (memcmp(want, (uint8_t *)buf + n, TAG_LEN))
        return 1;  /* srtp_err_status_auth_fail */
    *len = n;
    return 0;
}

static int stub_unprotect(void *ctx, void *buf, int *len) {
    (void)ctx;
    return unprotect(SEED_RTP, buf, len);
}

static int stub_unprotect_rtcp(void *ctx, void *buf, int *len) {
    (void)ctx;
    return unprotect(SEED_RTCP, buf, len);
}

/* The index libsrtp gives ``seq`` (srtp_rdbx_estimate_index): the rollover
 * counter guessed from the highest index so far. */
static int64_t srtp_index(const struct sent *s, uint16_t seq) {
    if (!s->count)
        return seq;
    int64_t roc = s->top >> 16;
    uint16_t local = (uint16_t)s->top;
    if (local < 0x8000) {
        if (seq - local > 0x8000)
            roc--;
    } else if (local - 0x8000 > seq) {
        roc++;
    }
    return roc * 65536 + seq;
}

static struct record *find(const struct sent *s, int64_t index) {
    unsigned mask = (unsigned)s->cap - 1;
    unsigned i = (unsigned)((uint64_t)index * 0x9E3779B97F4A7C15ULL >> 40) & mask;
    while (s->table[i].bytes && s->table[i].index != index)
        i = (i + 1) & mask;
    return &s->table[i];
}

static void grow(struct sent *s) {
    struct sent bigger = {s->top, s->count, s->cap ? 2 * s->cap : 64, NULL};
    bigger.table = calloc(bigger.cap, sizeof *bigger.table);
    require(bigger.table, "out of memory");
    for (int i = 0; i < s->cap; i++)
        if (s->table[i].bytes)
            *find(&bigger, s->table[i].index) = s->table[i];
    free(s->table);
    *s = bigger;
}

/* The plaintext ``p`` protected as its SSRC's index ``index``: the first
 * packet of that index, or the same bytes again. */
static void check_index(struct sent *s, int64_t index, const uint8_t *p, int len,
                        const char *what) {
    if (!s->cap)
        grow(s);
    struct record *r = find(s, index);
    if (r->bytes) {
        require(r->len == len && !memcmp(r->bytes, p, len), what);
        return;
    }
    if (2 * (s->count + 1) > s->cap) {
        grow(s);
        r = find(s, index);
    }
    r->bytes = malloc(len);
    require(r->bytes, "out of memory");
    memcpy(r->bytes, p, len);
    r->len = len;
    r->index = index;
    s->count++;
    w.stored += len;
}

/* An RTX packet (RFC 4588) rebuilt as the receiver does: the original
 * sequence number, payload type, SSRC and payload. It must be what went out
 * under that index, if anything did. */
static void check_rtx(struct subscriber *h, const uint8_t *p, int len) {
    struct fan_downlink *n = h->native;
    int header = 12 + 4 * (p[0] & 0x0F);
    if (p[0] & 0x10 && header + 4 <= len)
        header += 4 + 4 * (p[header + 2] << 8 | p[header + 3]);
    require(header + 2 <= len, "RTX packet without its original sequence number");
    struct sent *s = &h->sent[0];
    if (!s->count)
        return;
    uint8_t orig[RTP_MAX];
    memcpy(orig, p, header);
    memcpy(orig + header, p + header + 2, len - header - 2);
    orig[1] = (p[1] & 0x80) | n->pt;
    memcpy(orig + 2, p + header, 2);
    put32(orig + 8, n->ssrc);
    int64_t index = srtp_index(s, (uint16_t)(p[header] << 8 | p[header + 1]));
    struct record *r = find(s, index);
    require(!r->bytes || (r->len == len - 2 && !memcmp(r->bytes, orig, len - 2)),
            "an RTX packet rebuilds into other bytes than its index carried");
}

static int stub_protect(void *ctx, void *buf, int *len) {
    struct session *session = ctx;
    struct subscriber *h = session->sub;
    struct fan_downlink *n = h->native;
    uint8_t *p = buf;
    int size = *len;
    require(size >= 12 && size <= RTP_MAX && p[0] >> 6 == 2, "protecting no RTP packet");
    uint32_t ssrc = be32(p + 8);
    require(ssrc == n->ssrc || ssrc == n->rtx_ssrc, "a packet of another SSRC");
    if (h->refuse || (session->own && ssrc != n->ssrc))
        return 1;  /* libsrtp's error; own_session() has no stream for another SSRC */
    struct sent *s = &h->sent[ssrc != n->ssrc];
    uint16_t seq = (uint16_t)(p[2] << 8 | p[3]);
    int64_t index = srtp_index(s, seq);
    check_index(s, index, p, size, "two different packets under one SRTP index");
    if (index > s->top || s->count == 1)
        s->top = index;
    if (ssrc == n->rtx_ssrc)
        check_rtx(h, p, size);
    /* libsrtp may write this far past the packet (tag, MKI): the room must be there */
    memset(p + size, 0xA5, SRTP_TRAILER_MAX);
    checksum(SEED_RTP, p, size, p + size);
    *len = size + TAG_LEN;
    return 0;
}

static void forget(struct sent *s) {
    for (int i = 0; i < s->cap; i++)
        free(s->table[i].bytes);
    free(s->table);
    memset(s, 0, sizeof *s);
}

/* --- publications and subscribers, as Python keeps them ------------------- */

/* FanoutGroup._rebuild */
static void regroup(int p) {
    int count = 0;
    for (int i = 0; i < SUBS; i++)
        if (w.subs[i].native && w.subs[i].pub == p)
            w.groups[p][count++] = w.subs[i].native;
    w.pubs[p]->subs = w.groups[p];
    w.pubs[p]->count = count;
}

/* FanoutSender._select_payload_types and _apply_header */
static void select_types(struct subscriber *s) {
    s->selected = s->pub >= 0 && s->has_codec;
    s->native->active = 0;
    int pt = s->selected ? s->codec_pt : 0, rtx = s->selected ? s->codec_rtx : 0;
    require(!fan_header(s->native, pt, rtx, s->plain, s->plain_len, s->level,
                        s->level_len, s->level_len ? s->level_at : 0),
            "fan_header refused what Python builds");
}

/* Publication.attach/detach: bind or unbind, and the group rebuilt */
static void attach(struct subscriber *s, int p) {
    int old = s->pub;
    s->pub = -1;
    s->native->active = 0;
    s->selected = 0;
    if (old >= 0)
        regroup(old);
    if (p < 0 || !w.pubs[p])
        return;
    s->pub = p;
    s->awaiting = s->video;
    select_types(s);
    regroup(p);
}

/* SendHook: the transport is up (_on_send, which configures again), or the
 * hook detached for good */
static void set_ready(struct subscriber *s, int ready) {
    struct fan_downlink *n = s->native;
    s->released = !ready;
    n->active = 0;
    n->fd = ready ? s->sock : -1;
    n->srtp = ready ? &s->own : NULL;
    n->rtx_srtp = ready ? &s->shared : NULL;
    if (ready)
        select_types(s);
}

/* fanout.one_byte_extensions: an RFC 8285 block (0xBEDE), padded to 32 bits */
static uint8_t one_byte_block(uint8_t *out, int mid_id, int mid_len, int level_id) {
    int len = 4;
    if (mid_len) {
        out[len++] = (uint8_t)(mid_id << 4 | (mid_len - 1));
        for (int i = 0; i < mid_len; i++)
            out[len++] = (uint8_t)('0' + i % 10);
    }
    if (level_id) {
        out[len++] = (uint8_t)(level_id << 4);
        out[len++] = 0;
    }
    if (len == 4)
        return 0;
    while (len % 4)
        out[len++] = 0;
    put16(out, 0xBEDE);
    put16(out + 2, (uint16_t)((len - 4) / 4));
    return (uint8_t)len;
}

/* FanoutSender._configure: what the answer negotiated, its extension ids (0:
 * none) and payload types */
static void configure(struct subscriber *s, struct input *in) {
    struct fan_downlink *n = s->native;
    unsigned pt = u8(in), rtx = u8(in), ids = u8(in);
    int mid_id = (ids & 0x0F) % 15, level_id = (ids >> 4) % 15;
    int mid_len = mid_id ? s->mid_len : 0;
    if (level_id == mid_id)
        level_id = 0;
    s->plain_len = one_byte_block(s->plain, mid_id, mid_len, 0);
    s->level_len = level_id ? one_byte_block(s->level, mid_id, mid_len, level_id) : 0;
    s->level_at = 4 + (mid_len ? 1 + mid_len : 0) + 1;
    s->has_codec = pt >> 7;
    s->codec_pt = pt & 0x7F;
    s->codec_rtx = rtx & 0x7F;
    select_types(s);
}

static void new_sub(struct input *in) {
    unsigned flags = u8(in);
    struct subscriber *s = NULL;
    for (int i = 0; i < SUBS && !s; i++)
        if (!w.subs[i].native)
            s = &w.subs[i];
    if (!s)
        return;
    int fds[2];
    require(!socketpair(AF_UNIX, SOCK_DGRAM, 0, fds), "socketpair");
    if (flags & 1) {  /* a small buffer: sends fail unless the peer reads */
        int one = 1;
        setsockopt(fds[0], SOL_SOCKET, SO_SNDBUF, &one, sizeof one);
    }
    struct fan_downlink *n = calloc(1, sizeof *n);
    require(n, "out of memory");
    *s = (struct subscriber){.native = n, .sock = fds[0], .peer = fds[1], .pub = -1,
                             .mid_len = 1 + (flags >> 2) % 16, .video = flags >> 1 & 1};
    s->own = (struct session){s, 1};
    s->shared = (struct session){s, 0};
    w.serial++;
    n->ssrc = 0x50000000 + w.serial;
    n->rtx_ssrc = 0x60000000 + w.serial;
    n->rtx_seq = (uint16_t)(rng() & 0x7FFF);
    n->fd = -1;
}

static void free_sub(struct subscriber *s) {
    attach(s, -1);
    close(s->sock);
    close(s->peer);
    forget(&s->sent[0]);
    forget(&s->sent[1]);
    free(s->native);
    memset(s, 0, sizeof *s);
}

static void flush(int fd) {
    char buf[DATAGRAM_MAX];
    while (recv(fd, buf, sizeof buf, MSG_DONTWAIT) >= 0)
        ;
}

/* AudioLevels.__init__ */
static void meter(struct fan_publication *pub) {
    pub->metered = 1;
    pub->levels.loudest = 127;  /* SILENCE */
}

static void free_pub(int p) {
    fan_unroute(&w.rx, w.pubs[p]);
    for (int i = 0; i < SUBS; i++)
        if (w.subs[i].native && w.subs[i].pub == p)
            attach(&w.subs[i], -1);
    fan_publication_free(w.pubs[p]);
    w.pubs[p] = NULL;
}

/* --- packets -------------------------------------------------------------- */

struct pkt {
    uint32_t ssrc;
    uint16_t seq;
    uint32_t ts;
    int marker, level, pt;
    int size;
    const uint8_t *payload;
    uint8_t buf[1600];
};

/* [sel (+ssrc32)] [seq (+seq16)] [ts step] [flags (+level)] [size] [seed]
 * sel: bit 7 a raw SSRC, else known_ssrc[sel & 3]; seq: bit 7 a raw one, else
 * the last of that SSRC + (seq & 0x7F) - 4; flags: bit 0 marker, bit 1 a
 * level byte follows, bits 2-3 the payload type; size: 1..240, or from 0xF0
 * up 1400.. (past what a subscriber may be sent). */
static void read_pkt(struct input *in, struct pkt *pk) {
    unsigned sel = u8(in), k = sel & 3;
    pk->ssrc = sel & 0x80 ? u32(in) : known_ssrc[k];
    unsigned q = u8(in);
    pk->seq = q & 0x80 ? (uint16_t)u16(in) : (uint16_t)(w.seq[k] + (q & 0x7F) - 4);
    w.seq[k] = pk->seq;
    pk->ts = w.ts[k] += u8(in) * 120;
    unsigned flags = u8(in);
    pk->marker = flags & 1;
    pk->level = flags & 2 ? (int)u8(in) : -1;
    pk->pt = known_pt[flags >> 2 & 3];
    unsigned size = u8(in), seed = u8(in);
    pk->size = size < 0xF0 ? (int)size + 1 : 1400 + (int)(size - 0xF0) * 8;
    for (int i = 0; i < pk->size; i++)
        pk->buf[i] = (uint8_t)(seed + i * 7 + pk->seq);
    pk->payload = pk->buf;
}

/* aiortc_seam.parse_rtp (with the level as packet_args gives it) */
static int parse_rtp(const uint8_t *p, int size, int level_id, struct pkt *pk) {
    if (size < 12 || p[0] >> 6 != 2)
        return 0;
    int pos = 12 + 4 * (p[0] & 0x0F);
    if (size < pos)
        return 0;
    pk->level = -1;
    if (p[0] & 0x10) {
        if (size < pos + 4)
            return 0;
        int profile = p[pos] << 8 | p[pos + 1];
        int end = pos + 4 + 4 * (p[pos + 2] << 8 | p[pos + 3]);
        if (size < end)
            return 0;
        for (int at = pos + 4; (profile == 0xBEDE || profile == 0x1000) && at < end;) {
            if (!p[at]) {
                at++;
                continue;
            }
            int id = profile == 0xBEDE ? p[at] >> 4 : p[at];
            int len = profile == 0xBEDE ? (p[at] & 0x0F) + 1 : -1;
            at += profile == 0xBEDE ? 1 : 2;
            if (len < 0) {
                if (at > end)
                    return 0;
                len = p[at - 1];
            }
            if (at + len > end)
                return 0;
            if (id == level_id && len)
                pk->level = p[at];
            at += len;
        }
        pos = end;
    }
    int stop = size;
    if (p[0] & 0x20) {
        if (!p[size - 1] || p[size - 1] > size - pos)
            return 0;
        stop -= p[size - 1];
    }
    pk->marker = p[1] >> 7;
    pk->pt = p[1] & 0x7F;
    pk->seq = (uint16_t)(p[2] << 8 | p[3]);
    pk->ts = be32(p + 4);
    pk->ssrc = be32(p + 8);
    pk->payload = p + pos;
    pk->size = stop - pos;
    return 1;
}

/* the slot of the receive hook aiortc routes a packet to (by SSRC, or a new
 * SSRC by payload type), or -1 */
static int hook_of(const struct pkt *pk) {
    for (int k = 0; k < KNOWN; k++)
        if (known_ssrc[k] == pk->ssrc)
            return k;
    for (int k = 0; k < KNOWN; k++)
        if (known_pt[k] == pk->pt)
            return k;
    return -1;
}

static void add_tag(int mode, uint8_t seed, uint8_t *buf, int *len) {
    if (mode == 3)
        return;                   /* none (1: valid, like 0) */
    checksum(seed, buf, *len, buf + *len);
    if (mode == 2)
        buf[*len] ^= 0x40;        /* forged */
    *len += TAG_LEN;
}

/* An RTP datagram from a publisher: a packet (read_pkt), then [opts]
 * bits 0-1 CSRCs (0, 1, 2, 15), bits 2-3 extensions (none, one-byte,
 * two-byte, an unknown profile: then [shape], and [id, size] for each
 * element but the level), bit 4 padding ([pad]), bit 5 an extension length
 * one word too long, bits 6-7 the tag: valid, valid on the datagram cut
 * short ([cut]), forged, none. */
static int rtp_datagram(struct input *in, uint8_t *out, int level_id) {
    static const int csrcs[4] = {0, 1, 2, 15};
    struct pkt pk;
    read_pkt(in, &pk);
    unsigned opts = u8(in);
    int cc = csrcs[opts & 3], ext = opts >> 2 & 3, len = 12 + 4 * cc;
    out[0] = (uint8_t)(0x80 | (ext ? 0x10 : 0) | (opts & 0x10 ? 0x20 : 0) | cc);
    out[1] = (uint8_t)(pk.marker << 7 | pk.pt);
    put16(out + 2, pk.seq);
    put32(out + 4, pk.ts);
    put32(out + 8, pk.ssrc);
    for (int i = 0; i < cc; i++)
        put32(out + 12 + 4 * i, 0xC0000000 + i);
    if (ext) {
        static const uint16_t profiles[4] = {0, 0xBEDE, 0x1000, 0x1234};
        int start = len, two = ext == 2;
        unsigned shape = u8(in);
        int others = shape & 3, level_at = shape >> 2 & 3;
        len += 4;
        for (int i = 0; i <= others; i++) {
            if (i == level_at && pk.level >= 0) {
                int id = two ? level_id & 0xFF : level_id & 0x0F;
                if (two) {
                    out[len++] = (uint8_t)id;
                    out[len++] = 1;
                } else {
                    out[len++] = (uint8_t)(id << 4);
                }
                out[len++] = (uint8_t)pk.level;
            }
            if (i == others)
                break;
            unsigned id = u8(in), size = u8(in);
            size = two ? size & 31 : size % 16 + 1;
            if (two) {
                out[len++] = (uint8_t)id;
                out[len++] = (uint8_t)size;
            } else {
                out[len++] = (uint8_t)((id & 0x0F) << 4 | (size - 1));
            }
            for (unsigned j = 0; j < size; j++)
                out[len++] = (uint8_t)(id + j);
        }
        while (len % 4)
            out[len++] = 0;
        put16(out + start, profiles[ext]);
        put16(out + start + 2, (uint16_t)((len - start - 4) / 4 + (opts >> 5 & 1)));
    }
    memcpy(out + len, pk.payload, pk.size);
    len += pk.size;
    if (opts & 0x10) {
        unsigned pad = u8(in), count = pad & 31;
        for (unsigned i = 1; i < count; i++)
            out[len++] = 0;
        if (count)
            out[len++] = (uint8_t)(pad & 0x80 ? pad : count);
    }
    if (opts >> 6 == 1)
        len = 12 + (int)u8(in) % (len - 11);
    add_tag(opts >> 6, SEED_RTP, out, &len);
    return len;
}

/* [kind]: 0-4 RTP (rtp_datagram); 5 raw: [len, bytes, tag mode]; 6 RTCP
 * looking: [type, len] then a tag; 7 odd: [what] empty, short, oversized RTP
 * of a known SSRC, STUN or DTLS. */
static int datagram(struct input *in, uint8_t *out, int level_id) {
    unsigned kind = u8(in) % 8, what;
    int len;
    switch (kind) {
    case 5:
        len = (int)u8(in);
        for (int i = 0; i < len; i++)
            out[i] = (uint8_t)u8(in);
        add_tag(u8(in) & 3, SEED_RTP, out, &len);
        return len;
    case 6:
        out[0] = 0x80;
        out[1] = (uint8_t)(192 + u8(in) % 17);
        len = 4 + 4 * (int)(u8(in) % 8);
        put16(out + 2, (uint16_t)(len / 4 - 1));
        memset(out + 4, 0x11, len - 4);
        add_tag(0, SEED_RTCP, out, &len);
        return len;
    case 7:
        what = u8(in);
        switch (what & 3) {
        case 0:
            return 0;
        case 1:
            len = 1 + (int)(what >> 2) % 11;
            memset(out, 0x80 | (what & 0x3F), len);
            return len;
        case 2:
            len = FAN_PLAIN_MAX + 1 + (int)(what >> 2);
            memset(out, 0, len);
            out[0] = 0x80;
            out[1] = known_pt[what >> 2 & 3];
            put32(out + 8, known_ssrc[what >> 4 & 3]);
            return len;
        default:
            len = 20 + (int)(what >> 2);
            memset(out, what & 0x80 ? 0x16 : 0x00, len);  /* DTLS, STUN */
            return len;
        }
    default:
        return rtp_datagram(in, out, level_id);
    }
}

/* --- Python's reactions to what C returns --------------------------------- */

/* FanoutSender._resync: offsets for the publication's packet of ``ts``,
 * numbering on from what was sent */
static void resync(struct fan_downlink *n, struct fan_publication *pub, uint32_t ts) {
    n->ts_off = rng() - ts;
    fan_anchor(n, pub, rng() & 0x7FFF);
}

/* FanoutSender.write: a packet C skipped this subscriber for; ``keyframe``
 * says whether it is one, for a video subscriber waiting for one */
static void write_skipped(struct subscriber *s, struct fan_publication *pub, const struct pkt *pk,
                          int keyframe) {
    struct fan_downlink *n = s->native;
    if (!s->selected || !n->srtp || (s->awaiting && !keyframe))
        return;
    s->awaiting = 0;
    if (!fan_bound(n, pub))
        resync(n, pub, pk->ts);
    struct fan_downlink *one[1] = {n};
    int flags = fan_out(pub, one, 1, (const char *)pk->payload, pk->size, pk->marker,
                        pk->ts, pk->level, pub->last_at);
    if (flags & FAN_GAP)
        n->gap_pending = 0;
}

/* FanoutGroup.finish (by way of Publication.after_native); bit i of ``mask``
 * is subscriber i's ``keyframe`` */
static void finish(int p, int flags, const struct pkt *pk, unsigned mask) {
    for (int i = 0; i < SUBS; i++) {
        struct subscriber *s = &w.subs[i];
        if (!s->native || s->pub != p)
            continue;
        if (flags & FAN_SKIPPED && s->native->skipped)
            write_skipped(s, w.pubs[p], pk, mask >> i & 1);
        if (flags & FAN_GAP)
            s->native->gap_pending = 0;  /* record_gap */
    }
}

/* Publication.on_packet */
static void publish(int p, const struct pkt *pk, unsigned mask) {
    int flags = fan_publish(w.pubs[p], (const char *)pk->payload, pk->size, pk->marker,
                            pk->seq, pk->ts, pk->ssrc, pk->level);
    if (!(flags & FAN_DROP))
        finish(p, flags, pk, mask);
}

/* aiortc_seam._left_by_c: the packet C forwarded and left in rx->plain, for
 * the publication of the hook that routed its SSRC */
static void left_by_c(int flags, int level_id, unsigned mask) {
    struct pkt pk;
    if (!parse_rtp((const uint8_t *)w.rx.plain, w.rx.plain_len, level_id, &pk))
        return;
    int i = 0;
    while (i < w.rx.count && (w.rx.routes[i].ssrc != pk.ssrc || w.rx.routes[i].pt != pk.pt))
        i++;
    require(i < w.rx.count, "a packet C took by no route");
    finish(w.rx.routes[i].pub == w.pubs[0] ? 0 : 1, flags, &pk, mask);
}

/* aiortc_seam._receive_srtp: C's, or Python's own path (unprotect, parse,
 * admit within the margin, the receive hook: statistics, publish, route) */
static void receive_srtp(const uint8_t *data, int len, int level_id, unsigned mask) {
    int flags = fan_ingest(&w.rx, &rx_session, (const char *)data, len, level_id);
    if (flags & FAN_DROP)
        return;
    if (!(flags & FAN_PASS)) {
        if (flags)
            left_by_c(flags, level_id, mask);
        return;
    }
    uint8_t plain[DATAGRAM_MAX];
    int size = len;
    memcpy(plain, data, len);
    struct pkt pk;
    if (stub_unprotect(&rx_session, plain, &size) || !parse_rtp(plain, size, level_id, &pk))
        return;
    if (fan_admit(&w.rx, pk.ssrc, 0))
        return;
    int k = hook_of(&pk), p = k & 1;
    if (k < 0 || !w.pubs[p])
        return;
    fan_stream_add(&w.streams[k], pk.seq, pk.ts);
    if (pk.size)  /* else padding only: no media */
        publish(p, &pk, mask);
    if (mask & 0x80)  /* ReceiveHook.route: an audio SSRC, not RTX */
        fan_route(&w.rx, pk.ssrc, pk.pt, &w.streams[k], w.pubs[p]);
}

/* ActivityProbe's received(): a datagram asyncio read from the publish socket */
static void received(const uint8_t *data, int len, int level_id, unsigned mask) {
    if (!len || data[0] < 128 || data[0] > 191)
        return;  /* STUN, DTLS: aiortc's */
    if (len > 1 && data[1] > 191 && data[1] < 209)
        fan_python(&w.rx, w.mono);  /* RTCP: to aiortc within the budget */
    else
        receive_srtp(data, len, level_id, mask);
}

/* ActivityProbe._read_in_c's ready(): C drains, asyncio reads one datagram
 * C left; 0 once the socket is empty */
static int ready(int level_id, unsigned mask) {
    int flags;
    while (!((flags = fan_drain(&w.rx, w.rx_sock[0], &rx_session, level_id))
             & (FAN_EMPTY | FAN_PASS)))
        left_by_c(flags, level_id, mask);
    if (flags & FAN_EMPTY)
        return 0;
    uint8_t data[DATAGRAM_MAX];
    ssize_t n = recv(w.rx_sock[0], data, sizeof data, MSG_DONTWAIT);
    if (n < 0)
        return 0;
    received(data, (int)n, level_id, mask);
    return 1;
}

/* --- RTCP from the subscribe connection ----------------------------------- */

static struct subscriber *sender_of(uint32_t ssrc) {
    for (int i = 0; i < SUBS; i++)
        if (w.subs[i].native && w.subs[i].native->ssrc == ssrc)
            return &w.subs[i];
    return NULL;
}

/* FanoutSender.nack */
static void nack(struct subscriber *s, uint16_t pid, uint16_t blp, int first) {
    if (first)
        s->native->nack_count++;
    if (s->pub >= 0)
        fan_nack(w.pubs[s->pub], s->native, pid, blp, w.mono);
}

/* the SSRC a block or NACK is about: [sel] a subscriber's (sel % SUBS) or,
 * from 0xF0 on, one no subscriber has */
static uint32_t about(unsigned sel, struct subscriber **s) {
    *s = sel < 0xF0 ? &w.subs[sel % SUBS] : NULL;
    return *s && (*s)->native ? (*s)->native->ssrc : 0xDEAD0000 + sel;
}

/* an LSR: [sel] bit 7 one of the sender reports a subscriber remembers (or
 * none), else sel itself */
static uint32_t lsr_of(unsigned sel, struct subscriber *s) {
    if (sel & 0x80 && s && s->native)
        return s->native->sr_ntp[sel & (FAN_SR_KEPT - 1)];
    return sel;
}

/* report blocks: [sel, lsr, dlsr] each */
static int blocks(struct input *in, uint8_t *out, int count) {
    for (int i = 0; i < count; i++, out += 24) {
        struct subscriber *s;
        put32(out, about(u8(in), &s));
        out[4] = (uint8_t)(i * 37);
        out[5] = (uint8_t)(i & 1 ? 0xFF : 0);  /* a negative cumulative loss */
        out[6] = out[7] = (uint8_t)i;
        put32(out + 8, 0x10000 + i);
        put32(out + 12, 100 * i);
        put32(out + 16, lsr_of(u8(in), s));
        put32(out + 20, u8(in) * 0x100);
    }
    return 24 * count;
}

/* One RTCP packet: [type]: bits 0-2 SR, RR (then [count], blocks), SDES
 * ([len]), NACK ([sel, count, pid back, blp16]: count items, each 17
 * further), PLI, BYE, APP, raw ([len, bytes]); bits 3-4 its length field
 * right, one word too long, one word short, right. */
static int rtcp_packet(struct input *in, uint8_t *out) {
    static const int lies[4] = {0, 1, -1, 0};
    unsigned type = u8(in), count, len = 0;
    struct subscriber *s;
    switch (type & 7) {
    case 0:
    case 1:
        count = u8(in) & 31;
        out[1] = type & 7 ? RTCP_RR : RTCP_SR;
        len = type & 7 ? 8 : 28;
        memset(out + 4, 0x22, len - 4);
        len += blocks(in, out + len, count);
        break;
    case 2:
        count = 1;
        out[1] = RTCP_SDES;
        put32(out + 4, 0xABCDEF01);
        out[8] = 1;  /* CNAME */
        out[9] = (uint8_t)(u8(in) % 64);
        memset(out + 10, 'c', out[9]);
        len = 10 + out[9];
        while (len % 4)
            out[len++] = 0;
        break;
    case 3: {
        uint32_t media = about(u8(in), &s);
        unsigned items = u8(in), back = u8(in), blp = u16(in);
        uint16_t pid = (uint16_t)((s && s->native ? s->native->top : 0) - back);
        count = RTPFB_NACK;
        out[1] = RTCP_RTPFB;
        put32(out + 4, 0xABCDEF01);
        put32(out + 8, media);
        len = 12;
        for (unsigned i = 0; i < items % 80; i++, len += 4) {
            put16(out + len, (uint16_t)(pid + 17 * i));
            put16(out + len + 2, (uint16_t)(blp >> (i % 16) | blp << (16 - i % 16)));
        }
        break;
    }
    case 4:
        count = 1;  /* PSFB PLI */
        out[1] = 206;
        put32(out + 4, 0xABCDEF01);
        put32(out + 8, about(u8(in), &s));
        len = 12;
        break;
    case 5:
        count = 1;
        out[1] = 203;  /* BYE */
        put32(out + 4, 0xABCDEF01);
        len = 8;
        break;
    case 6:
        count = 0;
        out[1] = 204;  /* APP */
        memcpy(out + 4, "\xAB\xCD\xEF\x01name", 8);
        len = 12 + 4 * (u8(in) % 8);
        memset(out + 12, 0x33, len - 12);
        break;
    default:
        len = u8(in);
        for (unsigned i = 0; i < len; i++)
            out[i] = (uint8_t)u8(in);
        return (int)len;
    }
    out[0] = (uint8_t)(0x80 | (count & 0x1F));
    put16(out + 2, (uint16_t)(len / 4 - 1 + lies[type >> 3 & 3]));
    return (int)len;
}

/* aiortc_seam._receive_srtcp: a compound ([count] packets, then [tag mode]);
 * the blocks and NACK items go to the senders they are about */
static void receive_srtcp(struct input *in) {
    static uint8_t data[8 * 1024];  /* 6 packets of at most 28 + 31 * 24 bytes (an SR) */
    unsigned count = u8(in) % 6 + 1;
    int len = 0;
    for (unsigned i = 0; i < count; i++)
        len += rtcp_packet(in, data + len);
    add_tag(u8(in) & 3, SEED_RTCP, data, &len);
    struct fan_rtcp *rtcp = &w.rtcp;
    if (fan_rtcp_scan(rtcp, &rtcp_session, (const char *)data, len) & FAN_DROP)
        return;
    for (int i = 0; i < rtcp->count; i++) {
        struct subscriber *s = sender_of(rtcp->blocks[i].ssrc);
        if (s)
            fan_report(s->native, &rtcp->blocks[i], wall());
    }
    for (int i = 0; i < rtcp->nacks; i++) {
        struct fan_nack_item *item = &rtcp->nack[i];
        struct subscriber *s = sender_of(item->media_ssrc);
        if (s)
            nack(s, item->pid, item->blp, item->first);
    }
}

/* --- operations ----------------------------------------------------------- */

enum {
    OP_PUB_NEW,      /* [slot, flags]: bit 0 metered */
    OP_PUB_FREE,     /* [slot] */
    OP_PUB_SET,      /* [slot, what]: mute toggled (a new epoch), python toggled,
                        metered, a new epoch, a level tick */
    OP_SUB_NEW,      /* [flags]: bit 0 a small socket buffer, bit 1 video,
                        bits 2-5 its mid's length - 1 */
    OP_SUB_FREE,     /* [sub] */
    OP_SUB_READY,    /* [sub]: the transport comes up, or the hook detaches */
    OP_CONFIGURE,    /* [sub, pt (bit 7: the publication's codec), rtx pt, ids] */
    OP_BIND,         /* [sub, publication (2: none)] */
    OP_PUBLISH,      /* [pub] packet [mask] */
    OP_NACK,         /* [sub, pid (bit 7: raw16, else top - pid), blp16, time] */
    OP_REPORT,       /* [sub, lsr, dlsr16, time] */
    OP_SR_SENT,      /* [sub, time] */
    OP_STREAM_ADD,   /* [k, seq16, ts step] */
    OP_ROUTE,        /* [k]: bit 7 unroute, else its hook's route */
    OP_ADMIT,        /* [sel (bit 7: raw32), negotiated] */
    OP_INGEST,       /* [level id] datagram [mask] */
    OP_DRAIN,        /* [level id, count] datagrams [mask] */
    OP_RTCP,         /* compound (receive_srtcp) */
    OP_PYTHON,       /* [time] */
    OP_TIME,         /* [time] */
    OP_FLUSH,        /* [sub]: read what it was sent */
    OP_REFUSE,       /* [sub]: its protect fails, or no longer */
    OP_ANCHOR,       /* [sub]: resync to its publication's latest packet */
    OP_ADD_TIME,     /* [pub, ms] */
    OP_ACTIVE,       /* [sub] */
    OP_COUNT
};

static void run_op(struct input *in) {
    uint8_t buf[DATAGRAM_MAX];
    struct subscriber *s;
    struct pkt pk;
    unsigned op = u8(in) % OP_COUNT, p, x;
    int level_id, len;
    switch (op) {
    case OP_PUB_NEW:
        p = u8(in) % PUBS;
        x = u8(in);
        if (w.pubs[p])
            break;
        w.pubs[p] = fan_publication_new();
        require(w.pubs[p], "out of memory");
        w.pubs[p]->speaking_dbov = 45;  /* AudioLevels: SPEAKING_DBOV */
        if (x & 1)
            meter(w.pubs[p]);
        regroup((int)p);
        break;
    case OP_PUB_FREE:
        p = u8(in) % PUBS;
        if (w.pubs[p])
            free_pub((int)p);
        break;
    case OP_PUB_SET:
        p = u8(in) % PUBS;
        x = u8(in) % 5;
        if (!w.pubs[p])
            break;
        if (x == 0) {
            w.pubs[p]->muted ^= 1;  /* Publication.set_muted */
            w.pubs[p]->epoch++;
        } else if (x == 1) {
            w.pubs[p]->python ^= 1;
        } else if (x == 2) {
            meter(w.pubs[p]);
        } else if (x == 3) {
            w.pubs[p]->epoch++;
        } else {
            w.pubs[p]->levels.tick_packets = 0;  /* AudioLevels.tick */
            w.pubs[p]->levels.loudest = 127;
        }
        break;
    case OP_SUB_NEW:
        new_sub(in);
        break;
    case OP_SUB_FREE:
        if ((s = sub_of(in)))
            free_sub(s);
        break;
    case OP_SUB_READY:
        if ((s = sub_of(in)) && !s->released)
            set_ready(s, !s->native->srtp);
        break;
    case OP_CONFIGURE:
        if ((s = sub_of(in)))
            configure(s, in);
        break;
    case OP_BIND:
        s = sub_of(in);
        p = u8(in) % 3;
        if (s)
            attach(s, p < PUBS ? (int)p : -1);
        break;
    case OP_PUBLISH:
        p = u8(in) % PUBS;
        read_pkt(in, &pk);
        x = u8(in);
        if (w.pubs[p])
            publish((int)p, &pk, x);
        break;
    case OP_NACK: {
        s = sub_of(in);
        unsigned pid = u8(in);
        if (pid & 0x80)
            pid = u16(in);
        else if (s)
            pid = (uint16_t)(s->native->top - pid);
        unsigned blp = u16(in);
        step(in);
        if (s)
            nack(s, (uint16_t)pid, (uint16_t)blp, 1);
        break;
    }
    case OP_REPORT: {
        s = sub_of(in);
        struct fan_block block = {0, 12, -3, 0x10005, 40, 0, 0};
        block.lsr = lsr_of(u8(in), s);
        block.dlsr = u16(in);
        step(in);
        if (s) {
            block.ssrc = s->native->ssrc;
            fan_report(s->native, &block, wall());
        }
        break;
    }
    case OP_SR_SENT: {
        s = sub_of(in);
        step(in);
        double ntp = wall() + NTP_EPOCH;  /* FanoutSender's SR: NTP's middle 32 bits */
        uint64_t seconds = (uint64_t)ntp;
        uint32_t middle = (uint32_t)(seconds << 16 | (uint64_t)((ntp - seconds) * 65536));
        if (s)
            fan_sr_sent(s->native, middle, wall());
        break;
    }
    case OP_STREAM_ADD:
        x = u8(in) % KNOWN;
        p = u16(in);
        w.ts[x] += u8(in) * 160;
        fan_stream_add(&w.streams[x], (uint16_t)p, w.ts[x]);
        break;
    case OP_ROUTE:
        x = u8(in);
        p = x & 1;
        if (!w.pubs[p])
            break;
        if (x & 0x80)
            fan_unroute(&w.rx, w.pubs[p]);
        else
            fan_route(&w.rx, known_ssrc[x % KNOWN], known_pt[x % KNOWN],
                      &w.streams[x % KNOWN], w.pubs[p]);
        break;
    case OP_ADMIT:
        x = u8(in);
        fan_admit(&w.rx, x & 0x80 ? u32(in) : known_ssrc[x % KNOWN], (int)(u8(in) & 1));
        break;
    case OP_INGEST:
        level_id = level_ids[u8(in) & 7];
        len = datagram(in, buf, level_id);
        received(buf, len, level_id, u8(in));
        break;
    case OP_DRAIN: {
        level_id = level_ids[u8(in) & 7];
        unsigned count = u8(in) % 8 + 1;
        for (unsigned i = 0; i < count; i++) {
            len = datagram(in, buf, level_id);
            send(w.rx_sock[1], buf, len, MSG_DONTWAIT);
        }
        x = u8(in);
        while (ready(level_id, x))  /* each turn reads at least one datagram */
            ;
        break;
    }
    case OP_RTCP:
        receive_srtcp(in);
        break;
    case OP_PYTHON:
        fan_python(&w.rx, step(in));
        break;
    case OP_TIME:
        step(in);
        break;
    case OP_FLUSH:
        if ((s = sub_of(in)))
            flush(s->peer);
        break;
    case OP_REFUSE:
        if ((s = sub_of(in)))
            s->refuse ^= 1;
        break;
    case OP_ANCHOR:
        s = sub_of(in);
        if (s && s->pub >= 0 && w.pubs[s->pub]->has_index)
            resync(s->native, w.pubs[s->pub], 0);
        break;
    case OP_ADD_TIME:
        p = u8(in) % PUBS;
        x = u8(in);
        if (w.pubs[p])
            fan_add_time(w.pubs[p], x / 1000.0);
        break;
    case OP_ACTIVE:
        if ((s = sub_of(in)))
            s->native->active ^= 1;
        break;
    }
}

/* --- one input ------------------------------------------------------------ */

int LLVMFuzzerInitialize(int *argc, char ***argv) {
    (void)argc;
    (void)argv;
    fan_init((uintptr_t)stub_protect, (uintptr_t)stub_unprotect,
             (uintptr_t)stub_unprotect_rtcp);
    return 0;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
    struct input in = {data, data + size};
    memset(&w, 0, sizeof w);
    w.mono = 1000;
    unsigned setup = u8(&in);
    w.rng = 0x9E3779B97F4A7C15ULL ^ setup;
    w.rx.margin = setup & 7;  /* SSRC_MARGIN is 6 */
    w.rx.py_rate = py_rates[setup >> 3 & 7];  /* PYTHON_RATE */
    for (int k = 0; k < KNOWN; k++)
        w.streams[k].clockrate = clockrates[k];
    require(!socketpair(AF_UNIX, SOCK_DGRAM, 0, w.rx_sock), "socketpair");
    while (in.p < in.end && w.stored <= STORE_MAX)
        run_op(&in);
    for (int i = 0; i < SUBS; i++)
        if (w.subs[i].native)
            free_sub(&w.subs[i]);
    for (int p = 0; p < PUBS; p++)
        if (w.pubs[p])
            free_pub(p);
    close(w.rx_sock[0]);
    close(w.rx_sock[1]);
    return 0;
}
