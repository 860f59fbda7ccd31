/* Internal to tls/: struct layouts shared by the files of this folder. */
#ifndef AE_TLS_INT_H
#define AE_TLS_INT_H

#include <pthread.h>
#include <stdatomic.h>

#include <openssl/ssl.h>

#include "tls/tls.h"

#define AE_RING_MAX 3 /* next, current, previous */

struct ae_keyring {
    pthread_rwlock_t lock;
    ae_ticket_key keys[AE_KEYRING_CAP]; /* newest first; local rotation: keys[i].state == i */
    size_t nkeys;
    uint64_t last_id;
    uint64_t generation;
    EVP_CIPHER *cipher; /* fetched once: fetching per handshake is slow in OpenSSL 3 */
    EVP_MAC *mac;
    _Atomic uint64_t st_current, st_previous, st_next, st_unknown, st_encrypt;
};

int ae_keyring_ticket_cb(ae_keyring *r, unsigned char *key_name, unsigned char *iv,
                         EVP_CIPHER_CTX *cctx, EVP_MAC_CTX *hctx, int enc);

/* A name a certificate answers for (from its DNS SANs, or its CN when it has none). */
typedef struct {
    char *name; /* lower case; "*.example.com" for wildcards */
    size_t cert;
} ae_sni_entry;

struct ae_tls_ctx {
    SSL_CTX **ssl; /* one per configured certificate; ssl[0] is the default */
    size_t nssl;
    ae_sni_entry *sni;
    size_t nsni;
    unsigned char *alpn_wire; /* configured ALPN list in wire format */
    size_t alpn_wire_len;
    ae_keyring *ring;
};

#define AE_SNI_MAX 255

struct ae_tls_conn {
    SSL *ssl;
    ae_tls_ctx *ctx;
    ae_tls_fail_reason fail; /* set by callbacks that reject the handshake */
    int fail_set;
    char sni[AE_SNI_MAX + 1];
    char alpn[256];
    ae_tls_conn_hooks hooks;
    int has_hooks;
};

#endif
