/*
 * Test helpers shared by the TLS unit tests (not a test program itself: the glob only picks
 * up test_*.c). Generates throw-away keys and self-signed certificates with the OpenSSL 3 API
 * in a temporary directory, and loads in-memory configs that refer to them.
 */
#ifndef AE_UNIT_TLS_H
#define AE_UNIT_TLS_H

#include <dirent.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <openssl/evp.h>
#include <openssl/pem.h>
#include <openssl/rsa.h>
#include <openssl/x509.h>
#include <openssl/x509v3.h>

#include "conf/conf.h"

#define UT_UNUSED __attribute__((unused))

/* Creates a fresh temporary directory; its path goes into dir (at least 64 bytes). */
static UT_UNUSED void ut_tmpdir(char *dir, size_t len)
{
    const char *base = getenv("TMPDIR");

    snprintf(dir, len, "%s/ae-unit-XXXXXX", base != NULL && *base ? base : "/tmp");
    if (mkdtemp(dir) == NULL)
        fail_msg("mkdtemp %s failed", dir);
}

/* Removes dir and the plain files in it. */
static UT_UNUSED void ut_rmdir(const char *dir)
{
    DIR *d = opendir(dir);
    struct dirent *e;
    char path[4096];

    if (d == NULL)
        return;
    while ((e = readdir(d)) != NULL) {
        if (strcmp(e->d_name, ".") == 0 || strcmp(e->d_name, "..") == 0)
            continue;
        snprintf(path, sizeof(path), "%s/%s", dir, e->d_name);
        unlink(path);
    }
    closedir(d);
    rmdir(dir);
}

static UT_UNUSED void ut_write_file(const char *dir, const char *name, const char *text)
{
    char path[4096];
    FILE *f;

    snprintf(path, sizeof(path), "%s/%s", dir, name);
    f = fopen(path, "w");
    if (f == NULL)
        fail_msg("cannot write %s", path);
    fputs(text, f);
    fclose(f);
}

/* Writes a new private key (EC P-256, or RSA 2048 when rsa) to dir/key_name and a self-signed
 * certificate for it with CN and DNS SAN cn to dir/cert_name. Either name may be NULL. */
static UT_UNUSED void ut_make_cert(const char *dir, const char *cert_name, const char *key_name,
                                   const char *cn, int rsa)
{
    EVP_PKEY *pkey = rsa ? EVP_RSA_gen(2048) : EVP_EC_gen("P-256");
    X509 *x = X509_new();
    X509_NAME *name;
    X509_EXTENSION *ext;
    X509V3_CTX v3;
    char path[4096], san[300];
    FILE *f;

    if (pkey == NULL || x == NULL)
        fail_msg("key generation failed");
    X509_set_version(x, 2);
    ASN1_INTEGER_set(X509_get_serialNumber(x), (long)(ae_wall_ms() & 0x7fffffff));
    X509_gmtime_adj(X509_getm_notBefore(x), -3600);
    X509_gmtime_adj(X509_getm_notAfter(x), 86400L);
    X509_set_pubkey(x, pkey);
    name = X509_get_subject_name(x);
    X509_NAME_add_entry_by_txt(name, "CN", MBSTRING_ASC, (const unsigned char *)cn, -1, -1, 0);
    X509_set_issuer_name(x, name);
    X509V3_set_ctx_nodb(&v3);
    X509V3_set_ctx(&v3, x, x, NULL, NULL, 0);
    snprintf(san, sizeof(san), "DNS:%s", cn);
    ext = X509V3_EXT_conf_nid(NULL, &v3, NID_subject_alt_name, san);
    if (ext == NULL || X509_add_ext(x, ext, -1) != 1)
        fail_msg("cannot add SAN");
    X509_EXTENSION_free(ext);
    if (X509_sign(x, pkey, EVP_sha256()) == 0)
        fail_msg("X509_sign failed");

    if (cert_name != NULL) {
        snprintf(path, sizeof(path), "%s/%s", dir, cert_name);
        f = fopen(path, "w");
        if (f == NULL || PEM_write_X509(f, x) != 1)
            fail_msg("cannot write %s", path);
        fclose(f);
    }
    if (key_name != NULL) {
        snprintf(path, sizeof(path), "%s/%s", dir, key_name);
        f = fopen(path, "w");
        if (f == NULL || PEM_write_PrivateKey(f, pkey, NULL, NULL, 0, NULL, NULL) != 1)
            fail_msg("cannot write %s", path);
        fclose(f);
    }
    X509_free(x);
    EVP_PKEY_free(pkey);
}

/* Loads yaml as if read from dir/edge.yaml (relative file names resolve in dir). */
static UT_UNUSED ae_conf *ut_load_conf(const char *dir, const char *yaml)
{
    char name[4096], err[512];
    ae_conf *c = NULL;
    int rv;

    snprintf(name, sizeof(name), "%s/edge.yaml", dir);
    rv = ae_conf_load_string(name, yaml, strlen(yaml), &c, err, sizeof(err));
    if (rv != 0)
        fail_msg("config error %d: %s", rv, err);
    assert_non_null(c);
    return c;
}

#endif
