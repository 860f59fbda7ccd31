/*
 * Relay buffers and the per-worker pool they come from.
 *
 * A pool belongs to one worker thread (no locking). It keeps up to AE_BUFPOOL_KEEP free buffers
 * of its current size for reuse; buffers of any other size (a reload changed
 * tune.buffer_size) are freed when put back. Buffers are taken only while they hold data, so
 * idle connections hold none.
 */
#ifndef AE_BUF_H
#define AE_BUF_H

#include <stddef.h>
#include <stdint.h>

/* A relay buffer: data[off, off+len) is pending, cap bytes in all. */
typedef struct ae_buf {
    struct ae_buf *next; /* free list link (pool only) */
    uint32_t cap, off, len;
    uint8_t data[];
} ae_buf;

#define AE_BUFPOOL_KEEP 256 /* free buffers kept beyond those in use */

/* Zero-initialised = empty, no current size (every size is kept). */
typedef struct ae_bufpool {
    ae_buf *free;
    size_t nfree;
    uint32_t size; /* buffers of another size are freed on put; 0: keep any size */
} ae_bufpool;

/* An empty buffer (off = len = 0) of size bytes: from the free list when its head has that
 * size, else malloc'd. NULL when out of memory. */
ae_buf *ae_buf_get(ae_bufpool *p, uint32_t size);
/* Returns b to the pool (or frees it: pool full, or not of the pool's size). Accepts NULL. */
void ae_buf_put(ae_bufpool *p, ae_buf *b);
/* Sets the size buffers are kept at (the runtime's tune.buffer_size). */
void ae_bufpool_set_size(ae_bufpool *p, uint32_t size);
/* Frees every free buffer; the pool stays usable. */
void ae_bufpool_clear(ae_bufpool *p);

#endif
