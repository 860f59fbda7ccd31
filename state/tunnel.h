/*
 * Tunnel frames: a client's QUIC datagram forwarded from the site that received it to the site
 * that owns its connection (issue #5), authenticated with a key derived from the shared ring.
 *
 * Frame layout (one frame per UDP datagram between sites; all integers big-endian):
 *
 *   offset size  field
 *        0    4  magic "AEt1"
 *        4    1  version (1)
 *        5    1  flags: bits 1-0 client address family, bits 3-2 local address family
 *                (1 = IPv4, 2 = IPv6; 0 and 3 are refused); bit 4 REPLY (see below);
 *                bits 6-5 the ECN codepoint of a reply (0 unless REPLY); bit 7 reserved,
 *                sent as 0. A frame with bit 7 set, or ECN bits without REPLY, is refused
 *                (FLAGS): a receiver never guesses at a meaning it does not know
 *        6    2  origin site id (1..4095): the site that sent the frame (forward frame: the
 *                site that received the datagram; reply frame: the owner)
 *        8    8  key id: the id of the ring key whose tunnel key made the MAC
 *       16    8  timestamp: wall clock of the origin, ms since the Unix epoch
 *       24   18  client address (16) + port (2): the datagram's source as the origin saw it
 *       42   18  local address (16) + port (2): the (anycast) destination it was sent to
 *       60    2  datagram length n (1..65535)
 *       62    n  the datagram, unchanged
 *     62+n   16  MAC: HMAC-SHA256 over octets [0, 62+n), truncated to its first 16 octets
 *
 * Two kinds of frame share the layout. A forward frame (REPLY clear) carries a client's datagram
 * from the site that received it to the owner of its connection: client = the datagram's source,
 * local = the (anycast) address it was sent to. A reply frame (REPLY set, `site.return: tunnel`)
 * carries a datagram the owner sends on that connection back to the site that received the
 * client's packets, which sends it to the client: client = its destination, local = its source
 * (the anycast address), ECN bits = the codepoint to send it with.
 *
 * An IPv4 address is stored as an IPv4-mapped IPv6 address (::ffff:a.b.c.d); a frame whose IPv4
 * field lacks the ::ffff: prefix, or with port 0, is refused. The frame length must be exactly
 * 62 + n + 16 (AE_TUNNEL_OVERHEAD + n).
 *
 * MAC key: ae_ring_derive(ring key, "tunnel", 32 bytes). Encode uses the ring's current key;
 * decode accepts next, current and previous (looked up by the key id field), like the TLS and
 * CID keys, so sites whose rings are one rotation apart understand each other.
 *
 * Why 16 octets of MAC: a forger must get a frame accepted online, one packet per guess, so the
 * security of a t-bit tag is 2^-t per packet; 128 bits is far beyond reach and is what IPsec uses
 * for HMAC-SHA-256 (RFC 4868, HMAC-SHA-256-128), the same per-packet job. The 16 octets saved
 * matter on a path that already adds 78 octets plus outer IP/UDP headers to datagrams that are
 * often sized to the MTU.
 *
 * Decode checks, in order: magic (MAGIC) and version (VERSION) as far as the frame has them,
 * length (SHORT), key id (KEY), MAC (MAC), then, on authenticated content only, timestamp (STALE),
 * flags (FLAGS), site id (SITE) and address families / ports (ADDR). So a forged or corrupted frame
 * always counts as MAC (or an earlier reason), and STALE / FLAGS / SITE / ADDR are frames some
 * holder of the ring really sent: clock skew or a replay for STALE, a bug for SITE and ADDR.
 *
 * Replay: there is no per-frame state. A frame replayed within the timestamp window delivers the
 * same datagram again; QUIC drops it as a duplicate packet number (RFC 9000 §12.3, and the
 * AEAD keeps it from being altered). Outside the window it is refused as STALE.
 *
 * No allocation and no failure on the data path: the HMAC is nettle's (the GnuTLS crypto
 * library), whose contexts are plain structs. The keys object holds, per ring key, the HMAC state
 * after the key (inner and outer pads); encode and decode copy it onto the stack and finish the
 * MAC there. OpenSSL 3.0's EVP_MAC_init(ctx, NULL, 0, NULL) does reuse the key, but it
 * allocates (the digest context is duplicated) on every call, so it is not used here.
 *
 * Threads: encode and decode only read the keys object, so one object may be used by any number
 * of threads at once. It is immutable after construction; on a ring change build a new one and
 * free the old once no thread uses it (as for ae_cid_keys).
 */
#ifndef AE_STATE_TUNNEL_H
#define AE_STATE_TUNNEL_H

#include <stddef.h>
#include <stdint.h>
#include <netinet/in.h>
#include <sys/socket.h>

#include "state/ring.h"

#define AE_TUNNEL_MAGIC       "AEt1"
#define AE_TUNNEL_VERSION     1
#define AE_TUNNEL_HDR_LEN     62
#define AE_TUNNEL_MAC_LEN     16
#define AE_TUNNEL_OVERHEAD    (AE_TUNNEL_HDR_LEN + AE_TUNNEL_MAC_LEN)
#define AE_TUNNEL_DGRAM_MAX   65535
#define AE_TUNNEL_SITE_MAX    4095
#define AE_TUNNEL_KEY_LABEL   "tunnel"
#define AE_TUNNEL_KEY_LEN     32
#define AE_TUNNEL_FAMILY_IPV4 1 /* flags values */
#define AE_TUNNEL_FAMILY_IPV6 2
#define AE_TUNNEL_FLAG_REPLY  0x10 /* a reply frame (owner -> receiving site) */
#define AE_TUNNEL_ECN_SHIFT   5    /* reply frames: ECN codepoint in bits 6-5 */
#define AE_TUNNEL_ECN_MASK    0x60
#define AE_TUNNEL_FLAGS_KNOWN 0x7f /* bit 7 is reserved: refused when set */

/* Decode results: 0, or one of these. A separate code space from AE_ERR_*: they are contiguous
 * from -1 so that -rc indexes an array of AE_TUN_NREASONS + 1 counters. */
enum {
    AE_TUN_ERR_SHORT = -1,   /* truncated, or length not header + datagram length + MAC */
    AE_TUN_ERR_MAGIC = -2,   /* not a tunnel frame */
    AE_TUN_ERR_VERSION = -3, /* a version this site does not speak */
    AE_TUN_ERR_KEY = -4,     /* key id not next, current or previous in our ring */
    AE_TUN_ERR_MAC = -5,     /* MAC mismatch: forged or corrupted */
    AE_TUN_ERR_STALE = -6,   /* authentic, but timestamp outside now ± window */
    AE_TUN_ERR_SITE = -7,    /* authentic, but origin site id 0 or > 4095 */
    AE_TUN_ERR_ADDR = -8,    /* authentic, but bad address family, IPv4 encoding or port 0 */
    AE_TUN_ERR_FLAGS = -9,   /* authentic, but a reserved flag bit, or ECN bits without REPLY */
};
#define AE_TUN_NREASONS 9

typedef union {
    struct sockaddr sa;
    struct sockaddr_in in;
    struct sockaddr_in6 in6;
} ae_tunnel_addr;

/* A decoded header. client and local are ready for sendmsg / ngtcp2 paths (sockaddr_in for
 * IPv4, sockaddr_in6 for IPv6); *_len is the matching sockaddr size. */
typedef struct {
    uint8_t version;
    uint8_t flags;
    uint16_t site;
    uint64_t key_id;
    uint64_t timestamp_ms;
    ae_tunnel_addr client;
    socklen_t client_len;
    ae_tunnel_addr local;
    socklen_t local_len;
} ae_tunnel_hdr;

typedef struct ae_tunnel_keys ae_tunnel_keys;

/* Builds the tunnel keys of ring: its current key encodes; next, current and previous decode.
 * 0, AE_ERR_INVAL (no current key), AE_ERR_NOMEM or AE_ERR_TLS (HKDF failed). */
int ae_tunnel_keys_from_ring(const ae_ring *ring, ae_tunnel_keys **out);
void ae_tunnel_keys_free(ae_tunnel_keys *k);
/* The ring key id new frames are made with. */
uint64_t ae_tunnel_keys_id(const ae_tunnel_keys *k);
/* Whether frames made with ring key key_id are accepted. */
int ae_tunnel_keys_has(const ae_tunnel_keys *k, uint64_t key_id);

/* Writes the forward frame carrying datagram[0, len) into out[0, cap). client and local must
 * be AF_INET or AF_INET6 with a non-zero port. Returns the frame length (AE_TUNNEL_OVERHEAD +
 * len), AE_ERR_INVAL (site not 1..4095, bad address, len 0 or > 65535) or AE_ERR_TOOBIG (cap
 * too small). datagram may already be at out + AE_TUNNEL_HDR_LEN. No allocation. */
int ae_tunnel_encode(const ae_tunnel_keys *k, uint16_t site_id, uint64_t now_ms,
                     const struct sockaddr *client, const struct sockaddr *local,
                     const uint8_t *datagram, size_t len, uint8_t *out, size_t cap);
/* The same for a reply frame: datagram[0, len) is to be sent to client from local with ECN
 * codepoint ecn (0..3; other bits ignored). site_id is the sender's (the owner's). */
int ae_tunnel_encode_reply(const ae_tunnel_keys *k, uint16_t site_id, uint64_t now_ms,
                           const struct sockaddr *client, const struct sockaddr *local, uint8_t ecn,
                           const uint8_t *datagram, size_t len, uint8_t *out, size_t cap);

/* Verifies frame[0, len) made at most window_ms before or after now_ms. Returns 0 with *hdr
 * filled and *datagram / *datagram_len pointing into frame, or an AE_TUN_ERR_* reason (then the
 * outputs are unspecified). No allocation. */
int ae_tunnel_decode(const ae_tunnel_keys *k, const uint8_t *frame, size_t len, uint64_t now_ms,
                     uint64_t window_ms, ae_tunnel_hdr *hdr, const uint8_t **datagram,
                     size_t *datagram_len);

/* "ok" for 0, a short metric label ("short", "magic", "version", "key", "mac", "stale", "site",
 * "addr", "flags") for an AE_TUN_ERR_* code, "?" otherwise. */
const char *ae_tunnel_reason_name(int rc);

/*
 * TCP hand-off frames ("AEh1", issue #10; proxy/handoff/handoff.h): between the hand-off
 * endpoints of two sites (forward port + 1). Same keys object, a second MAC key per ring key:
 * ae_ring_derive(ring key, "tcp-handoff", 32 bytes), so a QUIC tunnel frame can never be taken
 * for a hand-off frame or the other way round.
 *
 *   offset size  field
 *        0    4  magic "AEh1"
 *        4    1  version (1)
 *        5    1  type: 1 QUERY, 2 ANSWER, 3 SEGMENT
 *        6    2  origin site id (1..4095)
 *        8    8  key id (ring key of the MAC)
 *       16    8  timestamp: wall clock of the origin, ms since the Unix epoch
 *       24    8  sequence number: per sender, increasing (anti-replay, state/replay.h)
 *       32    2  body length n
 *       34    n  body
 *     34+n   16  MAC: HMAC-SHA256 over octets [0, 34+n), truncated to 16 octets
 *
 * Bodies:
 *   QUERY    (44) query id (8), client address (16) + port (2), local address (16) + port (2):
 *                 "whose TCP connection is this 4-tuple?"
 *   ANSWER   (45) the same 44 octets as the query, then the verdict (1): 1 mine, 0 not mine
 *   SEGMENT  (20..65535) an IPv4 or IPv6 packet carrying one TCP segment, unchanged
 * Addresses: an IPv4-mapped address (::ffff:a.b.c.d) is IPv4; both ends of a tuple must be of
 * one family and have non-zero ports.
 *
 * Decode checks magic, version, length, key, MAC, then on authenticated content timestamp
 * (STALE), site (SITE), type (AE_HOFF_ERR_TYPE), body size and verdict (AE_HOFF_ERR_BODY) and
 * tuple addresses (ADDR). Replay inside the time window is the caller's (sequence numbers).
 */
#define AE_HOFF_MAGIC       "AEh1"
#define AE_HOFF_VERSION     1
#define AE_HOFF_HDR_LEN     34
#define AE_HOFF_OVERHEAD    (AE_HOFF_HDR_LEN + AE_TUNNEL_MAC_LEN)
#define AE_HOFF_KEY_LABEL   "tcp-handoff"
#define AE_HOFF_QUERY       1
#define AE_HOFF_ANSWER      2
#define AE_HOFF_SEGMENT     3
#define AE_HOFF_QUERY_LEN   44
#define AE_HOFF_ANSWER_LEN  45
#define AE_HOFF_SEGMENT_MIN 20
#define AE_HOFF_SEGMENT_MAX 65535

/* Decode reasons beyond AE_TUN_ERR_* (same code space, continuing it). */
enum {
    AE_HOFF_ERR_TYPE = -10, /* authentic, but a frame type this site does not know */
    AE_HOFF_ERR_BODY = -11, /* authentic, but a body size or verdict that does not fit the type */
};
#define AE_HOFF_NREASONS 11

typedef struct {
    ae_tunnel_addr client, local;
    socklen_t client_len, local_len;
} ae_hoff_tuple;

typedef struct {
    uint8_t type;
    uint16_t site;
    uint64_t key_id;
    uint64_t timestamp_ms;
    uint64_t seq;
    uint64_t qid;        /* QUERY, ANSWER */
    ae_hoff_tuple tuple; /* QUERY, ANSWER */
    uint8_t verdict;     /* ANSWER */
    const uint8_t *pkt;  /* SEGMENT: into the frame */
    size_t pkt_len;
} ae_hoff_frame;

/* Encoders: the frame into out[0, cap). Return its length, AE_ERR_INVAL (site, addresses,
 * packet size) or AE_ERR_TOOBIG. encode_segment's pkt may already be at out + AE_HOFF_HDR_LEN.
 * No allocation. */
int ae_hoff_encode_query(const ae_tunnel_keys *k, uint16_t site, uint64_t now_ms, uint64_t seq,
                         uint64_t qid, const struct sockaddr *client, const struct sockaddr *local,
                         uint8_t *out, size_t cap);
int ae_hoff_encode_answer(const ae_tunnel_keys *k, uint16_t site, uint64_t now_ms, uint64_t seq,
                          uint64_t qid, const struct sockaddr *client, const struct sockaddr *local,
                          uint8_t verdict, uint8_t *out, size_t cap);
int ae_hoff_encode_segment(const ae_tunnel_keys *k, uint16_t site, uint64_t now_ms, uint64_t seq,
                           const uint8_t *pkt, size_t len, uint8_t *out, size_t cap);
/* Verifies frame[0, len): 0 with *f filled (f->pkt points into frame), or an AE_TUN_ERR_* /
 * AE_HOFF_ERR_* reason. */
int ae_hoff_decode(const ae_tunnel_keys *k, const uint8_t *frame, size_t len, uint64_t now_ms,
                   uint64_t window_ms, ae_hoff_frame *f);
/* ae_tunnel_reason_name, plus "type" and "body". */
const char *ae_hoff_reason_name(int rc);

#endif
